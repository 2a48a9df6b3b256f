"""Write rendered frames to a rosbag2 (mcap or sqlite3) with ``rosbags``, and read them back.

Per frame, four messages with the same header stamp and frame_id
(``camera_color_optical_frame``), bag timestamps equal to the stamps, on the default
topics of :mod:`sam3d_ros.core.constants`:

* ``DEFAULT_RGB_TOPIC``: ``sensor_msgs/msg/Image`` rgb8;
* ``DEFAULT_DEPTH_TOPIC``: ``sensor_msgs/msg/Image`` 16UC1 depth in millimetres (0 = invalid);
* ``DEFAULT_INFO_TOPIC``: ``sensor_msgs/msg/CameraInfo`` (plumb_bob, zero distortion);
* ``DEFAULT_MASK_TOPIC``: ``sensor_msgs/msg/Image`` 16UC1 instance labels (0 = background).

By default the CameraInfo is logged just before the images (``camera_info="before_images"``);
``"after_images"`` logs it :data:`CAMERA_INFO_LAG_NS` after them, as many recorded bags
have it, and ``"once"`` only with the first frame (a driver that latches it), so the replay
and the node can be tested on both.

Ground truth goes to ``ground_truth.json`` inside the bag directory (rosbag2 ignores extra
files). Its schema (version 1)::

    {"format": "sam3d_ros/ground_truth", "version": 1, "frame_id": str,
     "camera": {"width", "height", "fx", "fy", "cx", "cy"},
     "frames": [{"stamp_ns": int, "world_T_camera": 4x4,
                 "objects": [{"label", "shape", "params", "camera_T_object": 4x4,
                              "world_T_object": 4x4, "visible_pixels", "amodal_pixels",
                              "visible_fraction", "color"}]}]}
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.constants import (
    DEFAULT_DEPTH_TOPIC,
    DEFAULT_INFO_TOPIC,
    DEFAULT_MASK_TOPIC,
    DEFAULT_RGB_TOPIC,
    MM_PER_M,
)
from sam3d_ros.core.types import RGBDFrame
from sam3d_ros.sim.raycast import SIM_FRAME_ID, ObjectGroundTruth, RenderedFrame

logger = logging.getLogger(__name__)

#: Name of the ground-truth sidecar inside the bag directory.
GROUND_TRUTH_FILE = "ground_truth.json"
GROUND_TRUTH_FORMAT = "sam3d_ros/ground_truth"
GROUND_TRUTH_VERSION = 1

#: Message definitions used for writing (ROS 2 Kilted; identical to Jazzy for these types).
DEFAULT_STORE = Stores.ROS2_KILTED

_IMAGE = "sensor_msgs/msg/Image"
_INFO = "sensor_msgs/msg/CameraInfo"

Storage = Literal["mcap", "sqlite3"]
#: When each frame's CameraInfo is logged (see the module docstring).
CameraInfoTiming = Literal["before_images", "after_images", "once"]
CAMERA_INFO_TIMINGS: tuple[str, ...] = ("before_images", "after_images", "once")
#: Log-time lag of a CameraInfo logged "after_images" (3 ms, as drivers publish it).
CAMERA_INFO_LAG_NS = 3_000_000


class BagError(RuntimeError):
    """Raised when a bag cannot be written or read, or the ground truth is malformed."""


@dataclass(frozen=True)
class FrameGroundTruth:
    """Ground truth of one bag frame: its stamp, camera pose and objects."""

    stamp_ns: int
    world_T_camera: NDArray[np.float64]
    objects: tuple[ObjectGroundTruth, ...]


@dataclass(frozen=True)
class GroundTruth:
    """The contents of ``ground_truth.json``: frame_id, intrinsics and frames by stamp."""

    frame_id: str
    camera: CameraIntrinsics
    frames: tuple[FrameGroundTruth, ...]

    def by_stamp(self) -> dict[int, FrameGroundTruth]:
        """Frames keyed by ``stamp_ns``."""
        return {f.stamp_ns: f for f in self.frames}


def depth_to_mm(depth: NDArray[np.floating]) -> NDArray[np.uint16]:
    """(H, W) metres (NaN invalid) -> (H, W) uint16 millimetres, 0 where invalid or out of
    the 1..65535 mm range."""
    d = np.asarray(depth, dtype=np.float64) * MM_PER_M
    ok = np.isfinite(d) & (d >= 0.5) & (d < 65535.5)
    return np.where(ok, np.round(np.where(ok, d, 0.0)), 0).astype(np.uint16)


def mm_to_depth(mm: NDArray[np.integer]) -> NDArray[np.float32]:
    """(H, W) uint16 millimetres (0 invalid) -> (H, W) float32 metres (NaN invalid)."""
    m = np.asarray(mm)
    return np.where(m > 0, m.astype(np.float64) / MM_PER_M, np.nan).astype(np.float32)


def _stamp(typestore: Any, stamp_ns: int) -> Any:
    time_t = typestore.types["builtin_interfaces/msg/Time"]
    return time_t(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _image_msg(typestore: Any, header: Any, arr: NDArray[Any], encoding: str) -> Any:
    image_t = typestore.types[_IMAGE]
    h, w = arr.shape[:2]
    if encoding == "rgb8":
        data = np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)
        step = 3 * w
    elif encoding == "16UC1":
        data = np.ascontiguousarray(arr, dtype="<u2").view(np.uint8).reshape(-1)
        step = 2 * w
    else:  # pragma: no cover - internal
        raise BagError(f"unsupported encoding {encoding!r}")
    return image_t(header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=step, data=data)


def _info_msg(typestore: Any, header: Any, k: CameraIntrinsics) -> Any:
    info_t = typestore.types[_INFO]
    roi_t = typestore.types["sensor_msgs/msg/RegionOfInterest"]
    return info_t(
        header=header,
        height=k.height,
        width=k.width,
        distortion_model="plumb_bob",
        d=np.zeros(5, dtype=np.float64),
        k=np.array([k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0], dtype=np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=roi_t(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def ground_truth_dict(frames: Sequence[RenderedFrame], frame_id: str = SIM_FRAME_ID) -> dict[str, Any]:
    """The ground-truth JSON document (see the module docstring) for ``frames``."""
    if not frames:
        raise BagError("no frames")
    k = frames[0].camera.intrinsics
    return {
        "format": GROUND_TRUTH_FORMAT,
        "version": GROUND_TRUTH_VERSION,
        "frame_id": frame_id,
        "camera": {"width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy},
        "frames": [
            {
                "stamp_ns": int(f.stamp_ns),
                "world_T_camera": f.camera.world_T_camera.tolist(),
                "objects": [o.to_json() for o in f.objects],
            }
            for f in frames
        ],
    }


def write_bag(
    path: str | Path,
    frames: Sequence[RenderedFrame],
    storage: Storage = "mcap",
    *,
    stamps_ns: Sequence[int] | None = None,
    frame_id: str = SIM_FRAME_ID,
    store: Stores = DEFAULT_STORE,
    write_ground_truth: bool = True,
    camera_info: CameraInfoTiming = "before_images",
) -> Path:
    """Write ``frames`` to a new rosbag2 directory ``path``.

    Args:
        path: bag directory to create (must not exist).
        frames: rendered frames (same image size); depth NaN is written as 0 mm.
        storage: "mcap" or "sqlite3".
        stamps_ns: stamps to use instead of ``frame.stamp_ns``; must be strictly increasing.
        frame_id: header frame_id of all messages.
        store: the rosbags typestore for the message definitions.
        write_ground_truth: also write ``ground_truth.json`` into the bag directory.
        camera_info: when each frame's CameraInfo is logged (see the module docstring).

    Returns:
        The bag directory.
    """
    bag = Path(path)
    if not frames:
        raise BagError("write_bag needs at least one frame")
    stamps = [int(f.stamp_ns) for f in frames] if stamps_ns is None else [int(s) for s in stamps_ns]
    if len(stamps) != len(frames):
        raise BagError(f"{len(stamps)} stamps for {len(frames)} frames")
    if any(b <= a for a, b in itertools.pairwise(stamps)) or stamps[0] < 0:
        raise BagError(f"stamps must be >= 0 and strictly increasing, got {stamps}")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise BagError(f"unknown storage {storage!r}; expected 'mcap' or 'sqlite3'")
    if bag.exists():
        raise BagError(f"bag path already exists: {bag}")
    k0 = frames[0].camera.intrinsics
    for f in frames:
        if (f.camera.intrinsics.width, f.camera.intrinsics.height) != (k0.width, k0.height):
            raise BagError(
                f"frame size {f.camera.intrinsics.width}x{f.camera.intrinsics.height} != first frame's"
            )
        if int(f.labels.max(initial=0)) > 65535 or int(f.labels.min(initial=0)) < 0:
            raise BagError(f"labels must be in 0..65535, got max {int(f.labels.max())}")

    write_rgbd_frames(
        bag,
        (f.with_stamp(s).to_rgbd_frame(frame_id) for f, s in zip(frames, stamps, strict=True)),
        storage,
        store=store,
        camera_info=camera_info,
    )
    if write_ground_truth:
        stamped = [f.with_stamp(s) for f, s in zip(frames, stamps, strict=True)]
        (bag / GROUND_TRUTH_FILE).write_text(json.dumps(ground_truth_dict(stamped, frame_id), indent=1))
    logger.info("wrote %d frames to %s (%s)", len(frames), bag, storage)
    return bag


def write_rgbd_frames(
    path: str | Path,
    frames: Iterable[RGBDFrame],
    storage: Storage = "mcap",
    *,
    store: Stores = DEFAULT_STORE,
    camera_info: CameraInfoTiming = "before_images",
) -> int:
    """Stream RGB-D frames into a new rosbag2 directory ``path`` (the writer behind
    :func:`write_bag`; also used by the dataset export of :mod:`sam3d_ros.sim.dataset`).

    Each frame becomes the four messages of the module docstring, stamped with
    ``frame.stamp_ns`` (header and bag time) and ``frame.frame_id``. Depth NaN is written
    as 0 mm; labels must be in 0..65535; stamps must be >= 0 and strictly increasing.
    ``camera_info`` says when the CameraInfo is logged (see the module docstring).

    Returns:
        The number of frames written.
    """
    bag = Path(path)
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise BagError(f"unknown storage {storage!r}; expected 'mcap' or 'sqlite3'")
    if bag.exists():
        raise BagError(f"bag path already exists: {bag}")
    if camera_info not in CAMERA_INFO_TIMINGS:
        raise BagError(f"unknown camera_info timing {camera_info!r}; expected one of {CAMERA_INFO_TIMINGS}")
    ts = get_typestore(store)
    header_t = ts.types["std_msgs/msg/Header"]
    count = 0
    last_stamp = -1
    try:
        with Writer(bag, version=9, storage_plugin=plugins[storage]) as writer:
            conns = {
                "rgb": writer.add_connection(DEFAULT_RGB_TOPIC, _IMAGE, typestore=ts),
                "depth": writer.add_connection(DEFAULT_DEPTH_TOPIC, _IMAGE, typestore=ts),
                "info": writer.add_connection(DEFAULT_INFO_TOPIC, _INFO, typestore=ts),
                "mask": writer.add_connection(DEFAULT_MASK_TOPIC, _IMAGE, typestore=ts),
            }
            for f in frames:
                stamp = int(f.stamp_ns)
                if stamp <= last_stamp:
                    raise BagError(
                        f"stamps must be >= 0 and strictly increasing, got {stamp} after {last_stamp}"
                    )
                last_stamp = stamp
                labels = np.asarray(f.labels)
                if int(labels.max(initial=0)) > 65535 or int(labels.min(initial=0)) < 0:
                    raise BagError(
                        f"labels must be in 0..65535, got [{int(labels.min())}, {int(labels.max())}]"
                    )
                header = header_t(stamp=_stamp(ts, stamp), frame_id=f.frame_id)
                info = ts.serialize_cdr(_info_msg(ts, header, f.camera), _INFO)
                if camera_info == "before_images" or (camera_info == "once" and count == 0):
                    writer.write(conns["info"], stamp, info)
                images: dict[str, tuple[NDArray[Any], str]] = {
                    "rgb": (f.rgb, "rgb8"),
                    "depth": (depth_to_mm(f.depth), "16UC1"),
                    "mask": (labels.astype(np.uint16), "16UC1"),
                }
                for key, (arr, encoding) in images.items():
                    writer.write(
                        conns[key], stamp, ts.serialize_cdr(_image_msg(ts, header, arr, encoding), _IMAGE)
                    )
                if camera_info == "after_images":
                    writer.write(conns["info"], stamp + CAMERA_INFO_LAG_NS, info)
                count += 1
    except (OSError, ValueError, KeyError) as err:
        raise BagError(f"failed to write bag {bag}: {err}") from err
    return count


def read_ground_truth(path: str | Path) -> GroundTruth:
    """Load the ground truth of a bag: ``path`` is the bag directory or the JSON file."""
    p = Path(path)
    if p.is_dir():
        p = p / GROUND_TRUTH_FILE
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BagError(f"cannot read ground truth {p}: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != GROUND_TRUTH_FORMAT:
        raise BagError(f"{p} is not a {GROUND_TRUTH_FORMAT} document")
    if int(doc.get("version", -1)) != GROUND_TRUTH_VERSION:
        raise BagError(f"{p}: unsupported ground-truth version {doc.get('version')!r}")
    try:
        cam = CameraIntrinsics(**{k: doc["camera"][k] for k in ("width", "height", "fx", "fy", "cx", "cy")})
        frames = tuple(
            FrameGroundTruth(
                stamp_ns=int(f["stamp_ns"]),
                world_T_camera=np.asarray(f["world_T_camera"], dtype=np.float64).reshape(4, 4),
                objects=tuple(ObjectGroundTruth.from_json(o) for o in f["objects"]),
            )
            for f in doc["frames"]
        )
        return GroundTruth(frame_id=str(doc["frame_id"]), camera=cam, frames=frames)
    except (KeyError, TypeError, ValueError) as err:
        raise BagError(f"{p}: malformed ground truth: {err}") from err


def _decode_image(msg: Any) -> NDArray[Any]:
    h, w, enc = int(msg.height), int(msg.width), str(msg.encoding)
    raw = np.asarray(msg.data, dtype=np.uint8)
    if enc in ("rgb8", "bgr8"):
        rows = raw.reshape(h, int(msg.step))[:, : 3 * w]
        img = rows.reshape(h, w, 3)
        return img[..., ::-1].copy() if enc == "bgr8" else img.copy()
    if enc in ("16UC1", "mono16"):
        dt = ">u2" if msg.is_bigendian else "<u2"
        rows = raw.reshape(h, int(msg.step))[:, : 2 * w]
        return rows.copy().view(dt).reshape(h, w).astype(np.uint16)
    raise BagError(f"unsupported image encoding {enc!r}")


def read_frames(
    path: str | Path,
    *,
    rgb_topic: str = DEFAULT_RGB_TOPIC,
    depth_topic: str = DEFAULT_DEPTH_TOPIC,
    info_topic: str = DEFAULT_INFO_TOPIC,
    mask_topic: str = DEFAULT_MASK_TOPIC,
    store: Stores = DEFAULT_STORE,
) -> list[RGBDFrame]:
    """Read a bag written by :func:`write_bag` (either storage) into RGBD frames.

    Messages are grouped by header stamp; only stamps with all four topics are returned,
    in stamp order. Depth is converted to float32 metres (NaN invalid) and labels to int32.
    """
    ts = get_typestore(store)
    topics = {rgb_topic: "rgb", depth_topic: "depth", info_topic: "info", mask_topic: "mask"}
    by_stamp: dict[int, dict[str, Any]] = {}
    try:
        with Reader(Path(path)) as reader:
            conns = [c for c in reader.connections if c.topic in topics]
            for conn, _t, raw in reader.messages(connections=conns):
                msg: Any = ts.deserialize_cdr(raw, conn.msgtype)
                stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                by_stamp.setdefault(stamp, {})[topics[conn.topic]] = msg
    except Exception as err:  # rosbags raises many unrelated types
        raise BagError(f"cannot read bag {path}: {err}") from err
    out = []
    for stamp in sorted(by_stamp):
        m = by_stamp[stamp]
        if len(m) < 4:
            logger.warning("stamp %d has only %s; skipped", stamp, sorted(m))
            continue
        info = m["info"]
        out.append(
            RGBDFrame(
                stamp_ns=stamp,
                frame_id=str(m["rgb"].header.frame_id),
                rgb=_decode_image(m["rgb"]),
                depth=mm_to_depth(_decode_image(m["depth"])),
                labels=_decode_image(m["mask"]).astype(np.int32),
                camera=CameraIntrinsics.from_k(int(info.width), int(info.height), list(info.k)),
            )
        )
    return out

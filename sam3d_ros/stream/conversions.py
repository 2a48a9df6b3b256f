"""Message -> numpy conversions shared by the live node and the offline bag replay.

Only message *fields* are read, so rclpy messages and rosbags dataclasses both work.
No rclpy import here.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from sam3d_ros.core.camera import CameraIntrinsics, CameraModelError
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.images import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    LABEL_ENCODINGS,
    decode_image,
    encode_image,
    to_depth_m,
    to_labels,
    to_rgb,
)
from sam3d_ros.core.types import InputError, RGBDFrame, SkipReason
from sam3d_ros.core.validation import assemble_frame


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """Stamp of a message with a header, in nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


def _decode(msg: Any, allowed: tuple[str, ...], max_pixels: int, role: str) -> tuple[np.ndarray, str]:
    try:
        arr = decode_image(
            height=msg.height,
            width=msg.width,
            encoding=str(msg.encoding),
            is_bigendian=msg.is_bigendian,
            step=msg.step,
            data=msg.data,
            max_pixels=max_pixels,
            allowed=allowed,
        )
    except InputError as err:
        raise InputError(err.reason, f"{role} image: {err.detail}") from err
    return arr, str(msg.encoding)


def camera_from_info(info: Any) -> CameraIntrinsics:
    """``sensor_msgs/CameraInfo`` -> intrinsics (K; the images are assumed rectified/aligned).

    Raises:
        InputError(INVALID_CAMERA_INFO) for zero or non-finite K or a zero image size.
    """
    k = [float(v) for v in info.k]
    if len(k) != 9 or not all(math.isfinite(v) for v in k):
        raise InputError(SkipReason.INVALID_CAMERA_INFO, f"CameraInfo K is not 9 finite values: {k}")
    try:
        return CameraIntrinsics.from_k(int(info.width), int(info.height), k)
    except CameraModelError as err:
        raise InputError(SkipReason.INVALID_CAMERA_INFO, f"CameraInfo unusable: {err} (K={k})") from err


def frame_from_messages(
    rgb_msg: Any,
    depth_msg: Any,
    info_msg: Any | None,
    mask_msg: Any,
    config: PipelineConfig,
    *,
    max_image_pixels: int,
) -> RGBDFrame:
    """Decode one synchronized set of messages into an :class:`RGBDFrame`.

    The frame keeps the colour image's header (stamp and frame_id).

    Args:
        config: the core's parameters (the valid depth range, see
            :func:`~sam3d_ros.core.validation.assemble_frame`).
        max_image_pixels: images with more pixels (width x height) are rejected (the
            node's ``max_image_pixels``).

    Raises:
        InputError: the reason names what is wrong (encoding, data length, sizes, K, an
            empty ``frame_id``, ...).
    """
    frame_id = str(rgb_msg.header.frame_id)
    if not frame_id.strip():  # nothing downstream (tf2, RViz, MoveIt) can place such a frame
        raise InputError(
            SkipReason.EMPTY_FRAME_ID,
            f"rgb image {header_stamp_ns(rgb_msg)} has an empty header.frame_id {frame_id!r}",
        )
    if info_msg is None:
        raise InputError(SkipReason.MISSING_CAMERA_INFO, "no CameraInfo received yet on the info topic")
    camera = camera_from_info(info_msg)
    max_px = max_image_pixels
    rgb_raw, rgb_enc = _decode(rgb_msg, COLOR_ENCODINGS, max_px, "rgb")
    depth_raw, depth_enc = _decode(depth_msg, DEPTH_ENCODINGS, max_px, "depth")
    mask_raw, mask_enc = _decode(mask_msg, LABEL_ENCODINGS, max_px, "mask")
    return assemble_frame(
        stamp_ns=header_stamp_ns(rgb_msg),
        frame_id=frame_id,
        rgb=to_rgb(rgb_raw, rgb_enc),
        depth=to_depth_m(depth_raw, depth_enc),
        labels=to_labels(mask_raw, mask_enc),
        camera=camera,
        config=config,
    )


def _header(stamp_ns: int, frame_id: str) -> SimpleNamespace:
    stamp = SimpleNamespace(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return SimpleNamespace(stamp=stamp, frame_id=frame_id)


def messages_from_frame(frame: RGBDFrame) -> tuple[Any, Any, Any, Any]:
    """Stand-ins with the fields of ``sensor_msgs/Image`` and ``sensor_msgs/CameraInfo``
    (rgb8 colour, 32FC1 depth in metres with NaN invalid, 16UC1 labels, K of the frame's
    intrinsics), for code that runs the message path without a ROS graph (the benchmark).

    Returns:
        ``(rgb, depth, info, mask)``; :func:`frame_from_messages` gives ``frame`` back.
    """
    header = _header(frame.stamp_ns, frame.frame_id)
    rgb, depth, mask = (
        SimpleNamespace(header=header, **encode_image(a, enc))
        for a, enc in (
            (frame.rgb, "rgb8"),
            (frame.depth.astype(np.float32), "32FC1"),
            (frame.labels.astype(np.uint16), "16UC1"),
        )
    )
    cam = frame.camera
    info = SimpleNamespace(
        header=header,
        width=cam.width,
        height=cam.height,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0],
        p=[cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )
    return rgb, depth, info, mask

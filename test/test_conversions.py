"""Message conversions with stand-in message objects (fields only), as rosbags gives them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from sam3d_ros.core.config import default_node_config
from sam3d_ros.core.images import encode_image
from sam3d_ros.core.types import InputError, RGBDFrame, SkipReason
from sam3d_ros.stream.conversions import camera_from_info, frame_from_messages


@dataclass
class Stamp:
    sec: int = 5
    nanosec: int = 7


@dataclass
class Header:
    stamp: Stamp = field(default_factory=Stamp)
    frame_id: str = "cam_optical"


@dataclass
class Img:
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any
    header: Header = field(default_factory=Header)


@dataclass
class Info:
    width: int
    height: int
    k: Any
    header: Header = field(default_factory=Header)


def img(arr: np.ndarray, enc: str, **kw: Any) -> Img:
    f = encode_image(arr, enc, **kw)
    return Img(
        f["height"],
        f["width"],
        f["encoding"],
        f["is_bigendian"],
        f["step"],
        np.frombuffer(f["data"], np.uint8),
    )


def scene(h: int = 40, w: int = 50) -> tuple[Img, Img, Info, Img]:
    rgb = np.full((h, w, 3), 128, np.uint8)
    depth = np.full((h, w), 800, np.uint16)
    labels = np.zeros((h, w), np.uint16)
    labels[10:20, 10:20] = 3
    info = Info(w, h, np.array([500.0, 0, w / 2, 0, 500.0, h / 2, 0, 0, 1]))
    return img(rgb, "bgr8"), img(depth, "16UC1"), info, img(labels, "mono16")


def decode(rgb: Any, depth: Any, info: Any, mask: Any, max_image_pixels: int | None = None) -> RGBDFrame:
    """:func:`frame_from_messages` with the node's defaults (``max_image_pixels`` is the
    node's, the depth range the pipeline's)."""
    cfg = default_node_config()
    limit = cfg.max_image_pixels if max_image_pixels is None else max_image_pixels
    return frame_from_messages(rgb, depth, info, mask, cfg.pipeline, max_image_pixels=limit)


def test_frame_fields_units_and_header() -> None:
    rgb, depth, info, mask = scene()
    frame = decode(rgb, depth, info, mask)
    assert frame.stamp_ns == 5_000_000_007 and frame.frame_id == "cam_optical"
    assert frame.rgb.shape == (40, 50, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth.dtype == np.float32 and float(frame.depth[0, 0]) == pytest.approx(0.8)
    assert set(np.unique(frame.labels)) == {0, 3}
    assert frame.camera.fx == 500.0


@pytest.mark.parametrize(
    "k", [[0.0] * 9, [float("nan")] * 9, [1.0, 0, 1, 0, float("inf"), 1, 0, 0, 1], [1.0] * 4]
)
def test_invalid_k(k: list[float]) -> None:
    with pytest.raises(InputError) as info:
        camera_from_info(Info(10, 10, k))
    assert info.value.reason is SkipReason.INVALID_CAMERA_INFO


def test_missing_info() -> None:
    rgb, depth, _, mask = scene()
    with pytest.raises(InputError) as info:
        decode(rgb, depth, None, mask)
    assert info.value.reason is SkipReason.MISSING_CAMERA_INFO


def test_size_mismatch_names_all_sizes() -> None:
    rgb, depth, info, _ = scene()
    _, _, _, small_mask = scene(20, 25)
    with pytest.raises(InputError) as err:
        decode(rgb, depth, info, small_mask)
    assert err.value.reason is SkipReason.SIZE_MISMATCH
    assert "mask 25x20" in err.value.detail and "rgb 50x40" in err.value.detail


def test_camera_info_size_mismatch() -> None:
    rgb, depth, _, mask = scene()
    with pytest.raises(InputError) as err:
        decode(rgb, depth, Info(640, 480, [500.0, 0, 320, 0, 500, 240, 0, 0, 1]), mask)
    assert err.value.reason is SkipReason.SIZE_MISMATCH


def test_depth_out_of_range_and_nan() -> None:
    rgb, _, info, mask = scene()
    d = np.full((40, 50), np.nan, np.float32)
    d[0, 0] = np.inf
    d[1, 1] = 50.0  # beyond depth_max
    with pytest.raises(InputError) as err:
        decode(rgb, img(d, "32FC1"), info, mask)
    assert err.value.reason is SkipReason.NO_VALID_DEPTH


def test_huge_8000x8000_image_is_rejected_without_crash() -> None:
    rgb, depth, info, _ = scene()
    huge = Img(8000, 8000, "mono8", 0, 8000, np.zeros(8000 * 8000, np.uint8))
    with pytest.raises(InputError) as err:
        decode(rgb, depth, info, huge)
    assert err.value.reason is SkipReason.IMAGE_TOO_LARGE
    assert "8000x8000" in err.value.detail
    rgb, depth, info, mask = scene()  # 50x40 = 2000 pixels
    assert decode(rgb, depth, info, mask, max_image_pixels=2000).rgb.shape == (40, 50, 3)
    with pytest.raises(InputError, match="max_image_pixels=1999") as err:
        decode(rgb, depth, info, mask, max_image_pixels=1999)
    assert err.value.reason is SkipReason.IMAGE_TOO_LARGE


@pytest.mark.parametrize("frame_id", ["", "   "])
def test_empty_frame_id_is_rejected(frame_id: str) -> None:
    rgb, depth, info, mask = scene()
    rgb.header = Header(frame_id=frame_id)
    with pytest.raises(InputError) as err:
        decode(rgb, depth, info, mask)
    assert err.value.reason is SkipReason.EMPTY_FRAME_ID

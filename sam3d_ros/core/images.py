"""Decoding of raw image buffers (the fields of ``sensor_msgs/Image``) into numpy arrays.

Pure numpy: the ROS layer passes the message fields, so rclpy messages and rosbags
dataclasses go through the same code. Row padding (``step`` > ``width * bytes_per_pixel``)
and big-endian data are honoured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core import constants as C
from sam3d_ros.core.constants import MM_PER_M
from sam3d_ros.core.types import InputError, SkipReason

logger = logging.getLogger(__name__)


class ImageError(InputError):
    """An image that cannot be decoded; ``reason`` is the skip reason reported in diagnostics."""


@dataclass(frozen=True)
class _Encoding:
    dtype: str  # numpy dtype without byte order, e.g. "u1", "u2", "f4"
    channels: int


#: Encodings this package decodes, by ``sensor_msgs/image_encodings`` name.
ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding("u1", 3),
    "bgr8": _Encoding("u1", 3),
    "rgba8": _Encoding("u1", 4),
    "bgra8": _Encoding("u1", 4),
    "mono8": _Encoding("u1", 1),
    "8UC1": _Encoding("u1", 1),
    "mono16": _Encoding("u2", 1),
    "16UC1": _Encoding("u2", 1),
    "32FC1": _Encoding("f4", 1),
    "32SC1": _Encoding("i4", 1),
}

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
LABEL_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1", "32SC1")


def _as_bytes_view(data: Any) -> NDArray[np.uint8]:
    """A uint8 view of ``data`` (bytes, bytearray, array.array, memoryview or numpy array)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def decode_image(
    *,
    height: int,
    width: int,
    encoding: str,
    is_bigendian: int | bool,
    step: int,
    data: Any,
    max_pixels: int,
    allowed: tuple[str, ...] | None = None,
) -> NDArray[Any]:
    """Decode raw image fields into an array.

    Args:
        height, width: image size in pixels.
        encoding: a name from :data:`ENCODINGS`.
        is_bigendian: byte order of multi-byte pixels.
        step: bytes per row, including padding.
        data: the pixel buffer; its length must be ``step * height``.
        max_pixels: larger images are rejected before anything is copied.
        allowed: encodings accepted for this role (default: all of :data:`ENCODINGS`).

    Returns:
        (H, W) or (H, W, C) array in native byte order, dtype per the encoding; a copy,
        never a view of ``data``.

    Raises:
        ImageError: with the reason (unsupported encoding, bad data length, too large).
    """
    enc = ENCODINGS.get(encoding)
    if enc is None or (allowed is not None and encoding not in allowed):
        valid = allowed if allowed is not None else tuple(ENCODINGS)
        raise ImageError(SkipReason.UNSUPPORTED_ENCODING, f"encoding {encoding!r} not in {list(valid)}")
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise ImageError(SkipReason.BAD_DATA_LENGTH, f"empty image {w}x{h}")
    if h * w > max_pixels:
        raise ImageError(
            SkipReason.IMAGE_TOO_LARGE, f"{w}x{h} = {h * w} pixels exceeds max_image_pixels={max_pixels}"
        )
    itemsize = np.dtype(enc.dtype).itemsize
    row_bytes = w * enc.channels * itemsize
    if step < row_bytes:
        raise ImageError(
            SkipReason.BAD_DATA_LENGTH, f"step {step} < width*bytes_per_pixel {row_bytes} ({encoding}, w={w})"
        )
    buf = _as_bytes_view(data)
    if buf.size != step * h:
        raise ImageError(
            SkipReason.BAD_DATA_LENGTH, f"data length {buf.size} != step*height = {step}*{h} = {step * h}"
        )
    rows = buf.reshape(h, step)[:, :row_bytes]
    dtype = np.dtype(enc.dtype).newbyteorder(">" if is_bigendian else "<")
    arr = np.ascontiguousarray(rows).view(dtype).reshape(h, w, enc.channels)
    native = arr.astype(np.dtype(enc.dtype), copy=True)
    return native[:, :, 0] if enc.channels == 1 else native


def to_rgb(image: NDArray[Any], encoding: str) -> NDArray[np.uint8]:
    """Convert a decoded colour image to (H, W, 3) uint8 RGB."""
    if encoding == "rgb8":
        return image
    if encoding == "bgr8":
        return np.ascontiguousarray(image[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(image[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(image[:, :, 2::-1])
    if encoding == "mono8":
        return np.repeat(image[:, :, None], 3, axis=2)
    raise ImageError(
        SkipReason.UNSUPPORTED_ENCODING, f"colour encoding {encoding!r} not in {COLOR_ENCODINGS}"
    )


def to_depth_m(image: NDArray[Any], encoding: str) -> NDArray[np.float32]:
    """Convert a decoded depth image to float32 metres, invalid (0, NaN, inf) -> NaN.

    16UC1/mono16 hold millimetres (REP 118), 32FC1 metres.
    """
    if encoding in ("16UC1", "mono16"):
        depth = image.astype(np.float32) / np.float32(MM_PER_M)
        depth[image == 0] = np.nan
        return depth
    if encoding == "32FC1":
        depth = image.astype(np.float32, copy=True)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
        return depth
    raise ImageError(SkipReason.UNSUPPORTED_ENCODING, f"depth encoding {encoding!r} not in {DEPTH_ENCODINGS}")


def to_labels(image: NDArray[Any], encoding: str) -> NDArray[np.int32]:
    """Convert a decoded instance-label image to int32 (0 = background; negatives -> 0)."""
    if encoding not in LABEL_ENCODINGS:
        raise ImageError(
            SkipReason.UNSUPPORTED_ENCODING, f"label encoding {encoding!r} not in {LABEL_ENCODINGS}"
        )
    labels = image.astype(np.int32, copy=False)
    if encoding == "32SC1" and (labels < 0).any():
        labels = np.where(labels < 0, 0, labels).astype(np.int32)
    return labels


def encode_image(
    array: NDArray[Any], encoding: str, *, bigendian: bool = False, pad: int = 0
) -> dict[str, Any]:
    """Inverse of :func:`decode_image`: the Image fields for an array (used by tools and tests).

    Returns a dict with height, width, encoding, is_bigendian, step and data (bytes).
    """
    enc = ENCODINGS.get(encoding)
    if enc is None:
        raise ImageError(SkipReason.UNSUPPORTED_ENCODING, f"encoding {encoding!r} not in {list(ENCODINGS)}")
    a = np.asarray(array)
    h, w = a.shape[:2]
    dtype = np.dtype(enc.dtype).newbyteorder(">" if bigendian else "<")
    rows = a.astype(dtype).reshape(h, w * enc.channels).view(np.uint8).reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.zeros((h, pad), dtype=np.uint8)], axis=1)
    return {
        "height": h,
        "width": w,
        "encoding": encoding,
        "is_bigendian": int(bigendian),
        "step": rows.shape[1],
        "data": rows.tobytes(),
    }


def touches_border(
    image: NDArray[Any], margin: int = C.BORDER_CUT_MARGIN_PX, value: int | None = None
) -> bool:
    """Whether an (H, W) mask has a pixel within ``margin`` pixels of the image border; with
    ``value``, whether the (H, W) label image has that label there (only the border strips
    are read, not the whole image)."""
    m = max(1, int(margin))
    strips = (image[:m], image[-m:], image[:, :m], image[:, -m:])
    if value is None:
        return any(bool(s.any()) for s in strips)
    return any(bool((s == value).any()) for s in strips)

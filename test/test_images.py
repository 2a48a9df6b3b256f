"""Image decoding: encodings, row padding, endianness, bad lengths, huge images."""

from __future__ import annotations

import numpy as np
import pytest

from sam3d_ros.core.images import (
    ImageError,
    decode_image,
    encode_image,
    to_depth_m,
    to_labels,
    to_rgb,
)
from sam3d_ros.core.types import SkipReason

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("encoding", "dtype", "channels"),
    [
        ("rgb8", np.uint8, 3),
        ("bgr8", np.uint8, 3),
        ("rgba8", np.uint8, 4),
        ("bgra8", np.uint8, 4),
        ("mono8", np.uint8, 1),
        ("mono16", np.uint16, 1),
        ("16UC1", np.uint16, 1),
        ("32FC1", np.float32, 1),
        ("32SC1", np.int32, 1),
    ],
)
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 5])
def test_round_trip_all_encodings(
    encoding: str, dtype: type, channels: int, bigendian: bool, pad: int
) -> None:
    shape = (7, 11) if channels == 1 else (7, 11, channels)
    if np.issubdtype(dtype, np.floating):
        arr = RNG.uniform(0.1, 9.0, size=shape).astype(dtype)
    else:
        arr = RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    fields = encode_image(arr, encoding, bigendian=bigendian, pad=pad)
    assert fields["step"] == 11 * channels * np.dtype(dtype).itemsize + pad
    out = decode_image(**fields, max_pixels=10_000)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)


def test_big_endian_bytes_are_swapped() -> None:
    data = bytes([0x01, 0x02])  # big-endian 0x0102 = 258
    out = decode_image(height=1, width=1, encoding="16UC1", is_bigendian=1, step=2, data=data, max_pixels=10)
    assert out[0, 0] == 258
    out = decode_image(height=1, width=1, encoding="16UC1", is_bigendian=0, step=2, data=data, max_pixels=10)
    assert out[0, 0] == 513


def test_accepts_array_array_and_numpy_buffers() -> None:
    import array

    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for data in (array.array("B", arr.tobytes()), arr.reshape(-1), bytearray(arr.tobytes()), memoryview(arr)):
        out = decode_image(
            height=2, width=3, encoding="mono8", is_bigendian=0, step=3, data=data, max_pixels=10
        )
        np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("length", [0, 11, 13])
def test_bad_data_length(length: int) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(
            height=3, width=4, encoding="mono8", is_bigendian=0, step=4, data=b"\0" * length, max_pixels=99
        )
    assert info.value.reason is SkipReason.BAD_DATA_LENGTH
    assert str(length) in info.value.detail


def test_step_smaller_than_row() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(
            height=2, width=4, encoding="16UC1", is_bigendian=0, step=6, data=b"\0" * 12, max_pixels=99
        )
    assert info.value.reason is SkipReason.BAD_DATA_LENGTH


def test_unsupported_encoding_lists_valid_ones() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(height=1, width=1, encoding="yuv422", is_bigendian=0, step=2, data=b"\0\0", max_pixels=9)
    assert info.value.reason is SkipReason.UNSUPPORTED_ENCODING
    assert "yuv422" in str(info.value) and "rgb8" in str(info.value)


def test_role_restriction() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(
            height=1,
            width=1,
            encoding="rgb8",
            is_bigendian=0,
            step=3,
            data=b"\0\0\0",
            max_pixels=9,
            allowed=("16UC1", "32FC1"),
        )
    assert info.value.reason is SkipReason.UNSUPPORTED_ENCODING


def test_huge_image_rejected_before_reading_data() -> None:
    # 8000x8000 declared with no data at all: rejected by size, nothing allocated
    with pytest.raises(ImageError) as info:
        decode_image(
            height=8000,
            width=8000,
            encoding="rgb8",
            is_bigendian=0,
            step=24000,
            data=b"",
            max_pixels=4096 * 4096,
        )
    assert info.value.reason is SkipReason.IMAGE_TOO_LARGE
    assert "8000x8000" in info.value.detail


def test_colour_conversions() -> None:
    px = np.array([[[10, 20, 30, 40]]], dtype=np.uint8)
    assert to_rgb(px[:, :, :3], "rgb8").tolist() == [[[10, 20, 30]]]
    assert to_rgb(px[:, :, :3], "bgr8").tolist() == [[[30, 20, 10]]]
    assert to_rgb(px, "rgba8").tolist() == [[[10, 20, 30]]]
    assert to_rgb(px, "bgra8").tolist() == [[[30, 20, 10]]]
    assert to_rgb(px[:, :, 0], "mono8").tolist() == [[[10, 10, 10]]]


def test_depth_units_and_invalid_values() -> None:
    mm = np.array([[0, 1000, 65535]], dtype=np.uint16)
    d = to_depth_m(mm, "16UC1")
    assert np.isnan(d[0, 0]) and d[0, 1] == pytest.approx(1.0) and d[0, 2] == pytest.approx(65.535)
    m = np.array([[np.nan, np.inf, -1.0, 0.0, 0.5]], dtype=np.float32)
    d = to_depth_m(m, "32FC1")
    assert np.isnan(d[0, :4]).all() and d[0, 4] == pytest.approx(0.5)


def test_labels() -> None:
    lab = np.array([[-3, 0, 7]], dtype=np.int32)
    assert to_labels(lab, "32SC1").tolist() == [[0, 0, 7]]
    assert to_labels(np.array([[65535]], dtype=np.uint16), "16UC1").tolist() == [[65535]]
    with pytest.raises(ImageError):
        to_labels(lab, "32FC1")

"""Validation of decoded inputs into an :class:`RGBDFrame` (sizes agree, depth usable)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.types import InputError, RGBDFrame, SkipReason


def assemble_frame(
    *,
    stamp_ns: int,
    frame_id: str,
    rgb: NDArray[np.uint8],
    depth: NDArray[np.float32],
    labels: NDArray[np.int32],
    camera: CameraIntrinsics,
    config: PipelineConfig,
    scores: Mapping[int, float] | None = None,
) -> RGBDFrame:
    """Check that decoded images belong together and build an :class:`RGBDFrame`.

    Depth outside ``[depth_min, depth_max]`` becomes NaN.

    Raises:
        InputError: SIZE_MISMATCH when RGB, depth, labels and CameraInfo sizes differ;
            NO_VALID_DEPTH when no depth pixel is valid.
    """
    shapes = {"rgb": rgb.shape[:2], "depth": depth.shape[:2], "mask": labels.shape[:2]}
    shapes["camera_info"] = (camera.height, camera.width)
    if len(set(shapes.values())) != 1:
        detail = ", ".join(f"{k} {w}x{h}" for k, (h, w) in shapes.items())
        raise InputError(SkipReason.SIZE_MISMATCH, f"image sizes differ (WxH): {detail}")
    d = np.array(depth, dtype=np.float32, copy=True)
    with np.errstate(invalid="ignore"):
        d[~np.isfinite(d) | (d < config.depth_min) | (d > config.depth_max)] = np.nan
    if not np.isfinite(d).any():
        raise InputError(
            SkipReason.NO_VALID_DEPTH,
            f"no depth pixel within [{config.depth_min}, {config.depth_max}] m in {d.shape[1]}x{d.shape[0]} image",
        )
    return RGBDFrame(
        stamp_ns=int(stamp_ns),
        frame_id=str(frame_id),
        rgb=rgb,
        depth=d,
        labels=labels.astype(np.int32, copy=False),
        camera=camera,
        scores=dict(scores or {}),
    )

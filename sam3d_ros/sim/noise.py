"""Depth-sensor noise model for synthetic depth images (RealSense-like, pure numpy).

Applied in this order to a clean (H, W) depth image in metres (NaN = invalid):

1. flying pixels: at depth discontinuities (neighbour jump > ``edge_jump_m``) a fraction
   ``flying_pixel_prob`` of the edge pixels gets a random mix ``a * fg + (1 - a) * bg`` of
   the nearest and farthest depth of its 3x3 neighbourhood;
2. axial Gaussian noise with ``sigma(z) = 0.0012 + 0.0019 * (z - 0.4)^2`` metres;
3. millimetre quantisation (``quantization_m``);
4. random single-pixel dropouts (``dropout_prob``);
5. small holes: a Poisson number (mean ``hole_rate``) of discs of radius
   ``hole_radius_px`` pixels set invalid;
6. depths outside ``[min_depth_m, max_depth_m]`` set invalid.

Everything is drawn from one ``numpy.random.Generator`` so a seed gives identical output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)


class NoiseModelError(ValueError):
    """Raised for invalid noise parameters or inputs."""


@dataclass(frozen=True)
class DepthNoiseConfig:
    """Parameters of :func:`apply_depth_noise` (metres, pixels, probabilities).

    ``enabled=False`` turns the whole model off (the input is returned as float32).
    Setting an individual probability/rate to 0 disables that component.
    """

    enabled: bool = True
    sigma_base_m: float = 0.0012
    sigma_quad_per_m: float = 0.0019
    sigma_ref_depth_m: float = 0.4
    quantization_m: float = 0.001
    dropout_prob: float = 0.003
    flying_pixel_prob: float = 0.5
    edge_jump_m: float = 0.02
    hole_rate: float = 3.0
    hole_radius_px: tuple[int, int] = (1, 4)
    min_depth_m: float = 0.1
    max_depth_m: float = 10.0

    def __post_init__(self) -> None:
        for name in ("dropout_prob", "flying_pixel_prob"):
            p = float(getattr(self, name))
            if not 0.0 <= p <= 1.0:
                raise NoiseModelError(f"{name} must be in [0, 1], got {p!r}")
        for name in ("sigma_base_m", "sigma_quad_per_m", "quantization_m", "hole_rate", "edge_jump_m"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v < 0.0:
                raise NoiseModelError(f"{name} must be finite and >= 0, got {v!r}")
        lo, hi = self.hole_radius_px
        if lo < 0 or hi < lo:
            raise NoiseModelError(f"hole_radius_px must be 0 <= lo <= hi, got {self.hole_radius_px!r}")
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise NoiseModelError(
                f"need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}"
            )

    @classmethod
    def disabled(cls) -> DepthNoiseConfig:
        """A config that leaves depth untouched."""
        return cls(enabled=False)

    @classmethod
    def gaussian_only(cls) -> DepthNoiseConfig:
        """Only the axial Gaussian noise (no quantisation, dropouts, flying pixels, holes)."""
        return cls(quantization_m=0.0, dropout_prob=0.0, flying_pixel_prob=0.0, hole_rate=0.0)


def axial_sigma(
    z: NDArray[np.floating] | float, config: DepthNoiseConfig | None = None
) -> NDArray[np.float64]:
    """Axial noise standard deviation (m) at depth ``z`` (m): ``0.0012 + 0.0019 (z - 0.4)^2``."""
    c = config or DepthNoiseConfig()
    zz = np.asarray(z, dtype=np.float64)
    return c.sigma_base_m + c.sigma_quad_per_m * (zz - c.sigma_ref_depth_m) ** 2


def _neighbour_min_max(depth: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """3x3 nan-ignoring min and max (NaN where the neighbourhood is all NaN)."""
    h, w = depth.shape
    pad = np.pad(depth, 1, mode="constant", constant_values=np.nan)
    stack = np.stack([pad[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    lo = np.where(np.isnan(stack), np.inf, stack).min(axis=0)
    hi = np.where(np.isnan(stack), -np.inf, stack).max(axis=0)
    lo = np.where(np.isfinite(lo), lo, np.nan)
    hi = np.where(np.isfinite(hi), hi, np.nan)
    return lo, hi


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def apply_depth_noise(
    depth: NDArray[np.floating],
    rng: np.random.Generator | int | None = None,
    config: DepthNoiseConfig | None = None,
) -> NDArray[np.float32]:
    """A noisy copy of a depth image.

    Args:
        depth: (H, W) depth in metres along the optical axis; NaN (or <= 0) is invalid.
        rng: a numpy Generator, or a seed for ``numpy.random.default_rng``.
        config: noise parameters (default :class:`DepthNoiseConfig`).

    Returns:
        (H, W) float32 noisy depth in metres, NaN where invalid.
    """
    cfg = config or DepthNoiseConfig()
    d = np.array(depth, dtype=np.float64)
    if d.ndim != 2:
        raise NoiseModelError(f"depth must be (H, W), got shape {d.shape}")
    d[~(d > 0)] = np.nan  # also catches NaN
    if not cfg.enabled:
        return d.astype(np.float32)
    gen = _as_generator(rng)
    h, w = d.shape
    valid = np.isfinite(d)

    if cfg.flying_pixel_prob > 0.0:
        lo, hi = _neighbour_min_max(d)
        edge = valid & np.isfinite(lo) & ((hi - lo) > cfg.edge_jump_m)
        pick = edge & (gen.random((h, w)) < cfg.flying_pixel_prob)
        a = gen.random((h, w))
        d = np.where(pick, a * lo + (1.0 - a) * hi, d)
        logger.debug("flying pixels: %d of %d edge pixels", int(pick.sum()), int(edge.sum()))

    sigma = axial_sigma(np.where(valid, d, 0.0), cfg)
    d = d + gen.standard_normal((h, w)) * sigma

    if cfg.quantization_m > 0.0:
        d = np.round(d / cfg.quantization_m) * cfg.quantization_m

    if cfg.dropout_prob > 0.0:
        d[gen.random((h, w)) < cfg.dropout_prob] = np.nan

    if cfg.hole_rate > 0.0:
        n_holes = int(gen.poisson(cfg.hole_rate))
        if n_holes:
            cy = gen.integers(0, h, n_holes)
            cx = gen.integers(0, w, n_holes)
            rad = gen.integers(cfg.hole_radius_px[0], cfg.hole_radius_px[1] + 1, n_holes)
            vv, uu = np.ogrid[0:h, 0:w]
            for y0, x0, r in zip(cy, cx, rad, strict=True):
                y_lo, y_hi = max(0, y0 - r), min(h, y0 + r + 1)
                x_lo, x_hi = max(0, x0 - r), min(w, x0 + r + 1)
                disc = (vv[y_lo:y_hi] - y0) ** 2 + (uu[:, x_lo:x_hi] - x0) ** 2 <= r * r
                d[y_lo:y_hi, x_lo:x_hi][disc] = np.nan

    d[~((d >= cfg.min_depth_m) & (d <= cfg.max_depth_m))] = np.nan
    return d.astype(np.float32)

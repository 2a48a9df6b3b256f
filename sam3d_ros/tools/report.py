"""Self-contained HTML report of an offline replay (``sam3d-ros replay BAG --out DIR``).

:class:`HtmlReport` is a :class:`~sam3d_ros.tools.replay.FrameObserver`. For every
processed frame it records a few numbers (stamp, object count, per-stage latency); for an
evenly spaced subset of at most ``max_frames`` frames it renders, right away, and keeps
only the PNG bytes of:

* the RGB image with every reconstructed object's mesh reprojected as a semi-transparent
  overlay with an outline, one colour per track id;
* the depth residual ``rendered mesh depth - observed depth`` (mm) on the reconstructed
  objects' mask pixels, colour-mapped (blue: mesh in front of the observed surface, red:
  behind), with a legend;
* per object, two shaded renders of its mesh: as seen from the camera, and with the object
  turned 180 degrees about its own z axis (through its bounding-box centre), which shows the
  side the camera never saw.

:meth:`HtmlReport.finish` writes ``DIR/report.html``: one file with inline CSS, inline SVG
plots (latency per frame, total and per stage; objects per frame; over *all* frames) and
the images as ``data:image/png;base64`` URIs. It references nothing outside itself.

Memory stays flat on long bags: frames are rendered only when their index is a multiple of
the current stride; when more than ``max_frames`` are kept, the stride doubles and the kept
frames are thinned. The per-frame numbers cost a few tens of bytes per frame.

Rasterisation reuses :func:`sam3d_ros.core.metrics.render_mesh_depth` (a triangle z-buffer
in the camera optical frame: x right, y down, z forward). Pure numpy + Pillow; no ROS.
"""

from __future__ import annotations

import base64
import colorsys
import datetime as dt
import html
import io
import logging
import math
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import transform_points
from sam3d_ros.core.metrics import MetricsError, render_mesh_depth
from sam3d_ros.core.types import FrameResult, ObjectResult, RGBDFrame

logger = logging.getLogger(__name__)

#: File name of the report inside the output directory.
REPORT_FILE = "report.html"
#: Default half-range of the residual colour map (mm).
DEFAULT_RESIDUAL_LIMIT_MM = 20.0
#: Default edge of the per-object thumbnails (pixels).
DEFAULT_THUMB_PX = 160
#: Images wider than this are downscaled before PNG encoding (pixels).
MAX_IMAGE_WIDTH = 640
#: Opacity of the object overlay on the RGB image.
OVERLAY_ALPHA = 0.45
#: Above this many frames, plot lines are reduced to a min/max envelope of this many bins.
MAX_PLOT_BINS = 1000

#: Diverging colour map (RdBu reversed): stops (t in [-1, 1], RGB).
_RESIDUAL_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (-1.0, (33, 102, 172)),
    (-0.5, (103, 169, 207)),
    (0.0, (247, 247, 247)),
    (0.5, (239, 138, 98)),
    (1.0, (178, 24, 43)),
)
#: Mask pixels the reprojected meshes do not cover.
_UNCOVERED_RGB = (255, 0, 255)
#: Mask pixels without a valid observed depth.
_NO_DEPTH_RGB = (90, 90, 90)
_THUMB_BACKGROUND = (34, 38, 44)
_STAGE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class ReportError(RuntimeError):
    """Raised for invalid report settings or when report.html cannot be written."""


# --------------------------------------------------------------------------- rendering


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour (uint8 triple) for a track id (golden-ratio hues)."""
    h = (int(track_id) * 0.618033988749895 + 0.13) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.8, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def posed_vertices(obj: ObjectResult, behind: bool = False) -> NDArray[np.float64]:
    """The object's mesh vertices in the camera optical frame, (V, 3) float64 metres.

    Args:
        obj: the reconstruction (mesh in the object frame, ``pose`` = camera_T_object).
        behind: first rotate the mesh 180 degrees about the object frame's z axis through
            the centre of its bounding box, so that the side facing away from the camera
            faces it.
    """
    v = np.asarray(obj.mesh.vertices, dtype=np.float64).reshape(-1, 3)
    if behind and len(v):
        c = 0.5 * (v.min(axis=0) + v.max(axis=0))
        v = (v - c) * np.array([-1.0, -1.0, 1.0]) + c
    return transform_points(obj.pose.matrix(), v)


def render_depth(
    vertices: NDArray[np.floating], faces: NDArray[np.integer], camera: CameraIntrinsics
) -> NDArray[np.float32]:
    """Z-buffer depth (H, W) float32 metres of a mesh posed in the camera optical frame;
    NaN where nothing projects (also for an empty or degenerate mesh)."""
    try:
        return render_mesh_depth((vertices, faces), camera)
    except MetricsError as err:
        logger.debug("nothing to render: %s", err)
        return np.full((camera.height, camera.width), np.nan, dtype=np.float32)


def render_objects(
    objects: Sequence[ObjectResult], camera: CameraIntrinsics
) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Render all objects' posed meshes into one z-buffer.

    Returns:
        (depth, index): (H, W) float32 depth in metres of the nearest mesh surface (NaN
        where none), and (H, W) int32 position in ``objects`` of that mesh (-1 where none).
    """
    h, w = camera.height, camera.width
    best = np.full((h, w), np.inf, dtype=np.float32)
    index = np.full((h, w), -1, dtype=np.int32)
    for i, obj in enumerate(objects):
        d = render_depth(posed_vertices(obj), obj.mesh.faces, camera)
        closer = d < best  # NaN compares False
        best[closer] = d[closer]
        index[closer] = i
    return np.where(np.isfinite(best), best, np.nan).astype(np.float32), index


def _boundary(index: NDArray[np.int32]) -> NDArray[np.bool_]:
    """(H, W) bool: pixels of a region (index >= 0) next to a pixel of another region or
    of no region (4-neighbourhood), thickened by one pixel inwards."""
    edge = np.zeros(index.shape, dtype=bool)
    d_v = index[1:, :] != index[:-1, :]
    d_h = index[:, 1:] != index[:, :-1]
    edge[1:, :] |= d_v
    edge[:-1, :] |= d_v
    edge[:, 1:] |= d_h
    edge[:, :-1] |= d_h
    return edge & (index >= 0)


def overlay_image(
    rgb: NDArray[np.uint8],
    index: NDArray[np.int32],
    colours: Sequence[tuple[int, int, int]],
    alpha: float = OVERLAY_ALPHA,
) -> NDArray[np.uint8]:
    """RGB with a semi-transparent colour per region and a solid outline.

    Args:
        rgb: (H, W, 3) uint8 image.
        index: (H, W) int32 region per pixel (position in ``colours``; -1: none).
        colours: RGB colour of each region.
        alpha: overlay opacity in [0, 1].

    Returns:
        (H, W, 3) uint8 image.
    """
    out = np.asarray(rgb, dtype=np.float32).copy()
    if not colours:
        return out.astype(np.uint8)
    lut = np.asarray(colours, dtype=np.float32).reshape(-1, 3)
    inside = index >= 0
    col = lut[np.clip(index, 0, len(lut) - 1)]
    out[inside] = (1.0 - alpha) * out[inside] + alpha * col[inside]
    edge = _boundary(index)
    out[edge] = col[edge]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def residual_colours(residual_mm: NDArray[np.floating], limit_mm: float) -> NDArray[np.uint8]:
    """Map residuals (mm, any shape) to RGB uint8 (shape + (3,)) with the diverging map,
    clipped at +-``limit_mm``."""
    t = np.clip(np.asarray(residual_mm, dtype=np.float64) / float(limit_mm), -1.0, 1.0)
    xs = [s[0] for s in _RESIDUAL_STOPS]
    out = np.empty((*t.shape, 3), dtype=np.uint8)
    for c in range(3):
        out[..., c] = np.rint(np.interp(t, xs, [s[1][c] for s in _RESIDUAL_STOPS])).astype(np.uint8)
    return out


@dataclass(frozen=True)
class ResidualStats:
    """Depth residual ``rendered - observed`` over the object pixels of one frame.

    Attributes:
        pixels: mask pixels with both a rendered and an observed depth.
        uncovered: mask pixels the reprojected meshes do not cover.
        median_abs_mm, p90_abs_mm, median_mm: NaN when ``pixels`` is 0.
    """

    pixels: int
    uncovered: int
    median_abs_mm: float
    p90_abs_mm: float
    median_mm: float


def residual_image(
    rgb: NDArray[np.uint8],
    observed: NDArray[np.floating],
    rendered: NDArray[np.floating],
    object_mask: NDArray[np.bool_],
    limit_mm: float,
) -> tuple[NDArray[np.uint8], NDArray[np.float64], ResidualStats]:
    """Colour-mapped depth residual of the reconstruction.

    Args:
        rgb: (H, W, 3) uint8; shown dimmed and grey outside the object pixels.
        observed: (H, W) observed depth, metres (NaN or <= 0: invalid).
        rendered: (H, W) rendered mesh depth, metres (NaN: no mesh).
        object_mask: (H, W) bool pixels of the reconstructed objects' instance masks.
        limit_mm: colour-map half range, mm.

    Returns:
        (image (H, W, 3) uint8, residual (H, W) float64 mm (NaN outside valid object
        pixels), statistics).
    """
    obs = np.asarray(observed, dtype=np.float64)
    ren = np.asarray(rendered, dtype=np.float64)
    obs_ok = np.isfinite(obs) & (obs > 0)
    ren_ok = np.isfinite(ren)
    valid = object_mask & obs_ok & ren_ok
    res = np.full(obs.shape, np.nan)
    res[valid] = (ren[valid] - obs[valid]) * 1000.0
    grey = np.asarray(rgb, dtype=np.float32).mean(axis=2) * 0.35 + 20.0
    img = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    img[object_mask & ~obs_ok] = _NO_DEPTH_RGB
    uncovered = object_mask & obs_ok & ~ren_ok
    img[uncovered] = _UNCOVERED_RGB
    img[valid] = residual_colours(res[valid], limit_mm)
    vals = res[valid]
    if vals.size:
        a = np.abs(vals)
        stats = ResidualStats(
            int(vals.size),
            int(uncovered.sum()),
            float(np.median(a)),
            float(np.percentile(a, 90)),
            float(np.median(vals)),
        )
    else:
        stats = ResidualStats(0, int(uncovered.sum()), math.nan, math.nan, math.nan)
    return img, res, stats


def _thumb_camera(
    points: NDArray[np.float64], camera: CameraIntrinsics, size: int, pad: float = 0.12
) -> CameraIntrinsics | None:
    """Intrinsics of a square ``size`` x ``size`` crop of ``camera`` (same optical centre
    and orientation, zoomed) that frames the projections of ``points`` (N, 3), camera
    frame; None when no point is in front of the camera."""
    u, v, _ = camera.project(points)
    ok = np.isfinite(u) & np.isfinite(v)
    if not ok.any():
        return None
    u0, u1 = float(u[ok].min()), float(u[ok].max())
    v0, v1 = float(v[ok].min()), float(v[ok].max())
    side = max(u1 - u0, v1 - v0, 1.0) * (1.0 + 2.0 * pad)
    s = size / side
    left = 0.5 * (u0 + u1) - 0.5 * side
    top = 0.5 * (v0 + v1) - 0.5 * side
    return CameraIntrinsics(
        size, size, camera.fx * s, camera.fy * s, (camera.cx - left) * s, (camera.cy - top) * s
    )


def _one_sided(p: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    """Derivative of a pointmap (H, W, 3) along ``axis`` (1: u, 0: v), choosing per pixel
    the forward or backward difference with the smaller depth change (so differences do not
    straddle depth discontinuities); NaN where neither neighbour is valid."""
    fwd = np.full(p.shape, np.nan)
    bwd = np.full(p.shape, np.nan)
    if axis == 1:
        fwd[:, :-1] = p[:, 1:] - p[:, :-1]
        bwd[:, 1:] = p[:, 1:] - p[:, :-1]
    else:
        fwd[:-1] = p[1:] - p[:-1]
        bwd[1:] = p[1:] - p[:-1]
    fz = np.where(np.isfinite(fwd[..., 2]), np.abs(fwd[..., 2]), np.inf)
    bz = np.where(np.isfinite(bwd[..., 2]), np.abs(bwd[..., 2]), np.inf)
    return np.where((fz <= bz)[..., None], fwd, bwd)


def shade_depth(
    depth: NDArray[np.floating], camera: CameraIntrinsics, colour: tuple[int, int, int]
) -> NDArray[np.uint8]:
    """Shade a rendered depth image with a head light (normals from the depth map).

    Args:
        depth: (H, W) metres, NaN where empty.
        camera: intrinsics of ``depth``.
        colour: base RGB of the surface.

    Returns:
        (H, W, 3) uint8 image; empty pixels get a dark background.
    """
    d = np.asarray(depth, dtype=np.float64)
    p = camera.backproject_depth(d)
    n = np.cross(_one_sided(p, 1), _one_sided(p, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        n /= np.linalg.norm(n, axis=2, keepdims=True)
        view = -p / np.linalg.norm(p, axis=2, keepdims=True)
        lambert = np.abs(np.sum(n * view, axis=2))
    lambert = np.where(np.isfinite(lambert), lambert, 0.6)
    intensity = 0.22 + 0.78 * lambert
    img = np.empty((*d.shape, 3), dtype=np.uint8)
    img[:] = _THUMB_BACKGROUND
    hit = np.isfinite(d)
    base = np.asarray(colour, dtype=np.float64)
    img[hit] = np.clip(np.rint(intensity[hit, None] * base), 0, 255).astype(np.uint8)
    return img


def object_views(
    obj: ObjectResult, camera: CameraIntrinsics, size: int = DEFAULT_THUMB_PX
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]] | None:
    """Shaded (size, size, 3) uint8 renders of one object's mesh: from the camera, and
    turned 180 degrees about its z axis (the unseen side). Both use the same zoomed crop
    of the camera. None when the mesh is not in front of the camera."""
    front = posed_vertices(obj)
    back = posed_vertices(obj, behind=True)
    if not len(front):
        return None
    k = _thumb_camera(np.vstack([front, back]), camera, size)
    if k is None:
        return None
    colour = track_colour(obj.track_id)
    faces = obj.mesh.faces
    return (
        shade_depth(render_depth(front, faces, k), k, colour),
        shade_depth(render_depth(back, faces, k), k, colour),
    )


def png_bytes(image: NDArray[np.uint8], max_width: int = MAX_IMAGE_WIDTH, nearest: bool = False) -> bytes:
    """PNG encoding of an (H, W, 3) uint8 image, downscaled to at most ``max_width``."""
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if pil.width > max_width:
        h = max(1, round(pil.height * max_width / pil.width))
        pil = pil.resize((max_width, h), Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _label_regions(
    image: NDArray[np.uint8],
    index: NDArray[np.int32],
    labels: Sequence[str],
    colours: Sequence[tuple[int, int, int]],
) -> NDArray[np.uint8]:
    """Write ``labels[i]`` at the centroid of region ``i`` (boxed, in the region's colour)."""
    if not labels:
        return image
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for i, text in enumerate(labels):
        vv, uu = np.nonzero(index == i)
        if not len(uu):
            continue
        x, y = float(uu.mean()), float(vv.mean())
        box = draw.textbbox((x, y), text, anchor="mm")
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((x, y), text, fill=colours[i], anchor="mm")
    return np.asarray(pil)


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class _ObjectCard:
    track_id: int
    instance_id: int
    label: str
    position: tuple[float, float, float]
    extents: tuple[float, float, float]
    visible_fraction: float
    confidence: float
    score: float
    vertices: int
    faces: int
    residual_median_abs_mm: float
    front_png: bytes | None
    back_png: bytes | None


@dataclass(frozen=True)
class _ShownFrame:
    index: int
    stamp_ns: int
    frame_id: str
    size: tuple[int, int]
    timings_ms: dict[str, float]
    overlay_png: bytes | None = None
    residual_png: bytes | None = None
    residual: ResidualStats | None = None
    objects: tuple[_ObjectCard, ...] = ()
    skipped: tuple[tuple[int, str, str], ...] = ()
    error: str | None = None

    @property
    def nbytes(self) -> int:
        imgs = [self.overlay_png, self.residual_png]
        for o in self.objects:
            imgs += [o.front_png, o.back_png]
        return sum(len(b) for b in imgs if b)


@dataclass
class _Series:
    """Per-frame numbers over all frames, in compact arrays (8 bytes per value)."""

    index: array = field(default_factory=lambda: array("q"))
    stamp_ns: array = field(default_factory=lambda: array("q"))
    objects: array = field(default_factory=lambda: array("i"))
    timings: dict[str, array] = field(default_factory=dict)

    def append(self, index: int, stamp_ns: int, objects: int, timings: dict[str, float]) -> None:
        n = len(self.index)
        for key in timings:
            if key not in self.timings:
                self.timings[key] = array("d", [math.nan]) * n
        for key, values in self.timings.items():
            v = timings.get(key)
            values.append(float(v) if v is not None and math.isfinite(float(v)) else math.nan)
        self.index.append(int(index))
        self.stamp_ns.append(int(stamp_ns))
        self.objects.append(int(objects))

    def __len__(self) -> int:
        return len(self.index)


# --------------------------------------------------------------------------- observer


class HtmlReport:
    """Replay observer that writes ``out_dir/report.html`` (see the module docstring).

    Args:
        out_dir: output directory of the replay (created if needed).
        max_frames: at most this many frames are rendered and shown (0: plots and summary
            only). Shown frames are evenly spaced: every ``stride``-th processed frame.
        residual_limit_mm: half range of the residual colour map, mm.
        thumb_px: edge of the per-object renders, pixels.
    """

    def __init__(
        self,
        out_dir: Path,
        max_frames: int = 12,
        *,
        residual_limit_mm: float = DEFAULT_RESIDUAL_LIMIT_MM,
        thumb_px: int = DEFAULT_THUMB_PX,
    ) -> None:
        if int(max_frames) < 0:
            raise ReportError(f"max_frames must be >= 0, got {max_frames!r}")
        if not (math.isfinite(residual_limit_mm) and residual_limit_mm > 0):
            raise ReportError(f"residual_limit_mm must be > 0, got {residual_limit_mm!r}")
        if int(thumb_px) < 16:
            raise ReportError(f"thumb_px must be >= 16, got {thumb_px!r}")
        self.out_dir = Path(out_dir)
        self.max_frames = int(max_frames)
        self.residual_limit_mm = float(residual_limit_mm)
        self.thumb_px = int(thumb_px)
        self.stride = 1
        self._shown: dict[int, _ShownFrame] = {}
        self._series = _Series()

    @property
    def path(self) -> Path:
        """Where :meth:`finish` writes the report."""
        return self.out_dir / REPORT_FILE

    @property
    def shown_indices(self) -> list[int]:
        """Indices of the frames currently kept for display, ascending."""
        return sorted(self._shown)

    @property
    def frames_seen(self) -> int:
        """Number of :meth:`on_frame` calls so far."""
        return len(self._series)

    def on_frame(self, index: int, frame: RGBDFrame, result: FrameResult, record: dict[str, Any]) -> None:
        """Record the frame's numbers; render it when ``index`` is on the current stride.

        Never raises for a frame that cannot be rendered (the error is shown instead).
        Keeps no reference to ``frame``, ``result`` or ``record``.
        """
        self._series.append(index, result.stamp_ns, len(result.objects), result.timings_ms)
        if self.max_frames == 0 or index % self.stride != 0:
            return
        self._shown[int(index)] = self._render(index, frame, result)
        while len(self._shown) > self.max_frames:
            self.stride *= 2
            self._shown = {i: f for i, f in self._shown.items() if i % self.stride == 0}
            logger.debug("report stride now %d (%d frames kept)", self.stride, len(self._shown))

    def _render(self, index: int, frame: RGBDFrame, result: FrameResult) -> _ShownFrame:
        base = _ShownFrame(
            index=int(index),
            stamp_ns=int(result.stamp_ns),
            frame_id=str(result.frame_id),
            size=(int(frame.camera.width), int(frame.camera.height)),
            timings_ms={k: float(v) for k, v in result.timings_ms.items()},
            skipped=tuple((int(s.instance_id), s.reason.value, str(s.detail)) for s in result.skipped),
        )
        try:
            return self._render_images(base, frame, result)
        except Exception as err:  # a report problem never ends a replay (logged, shown)
            logger.exception("report: cannot render frame %d (stamp %d)", index, result.stamp_ns)
            return replace(base, error=f"{type(err).__name__}: {err}")

    def _render_images(self, base: _ShownFrame, frame: RGBDFrame, result: FrameResult) -> _ShownFrame:
        cam = frame.camera
        objs = result.objects
        colours = [track_colour(o.track_id) for o in objs]
        rendered, index = render_objects(objs, cam)
        overlay = overlay_image(frame.rgb, index, colours)
        overlay = _label_regions(overlay, index, [f"#{o.track_id}" for o in objs], colours)
        ids = np.array([o.instance_id for o in objs], dtype=np.int64)
        labels = np.asarray(frame.labels)
        object_mask = np.isin(labels, ids) if len(ids) else np.zeros(labels.shape, dtype=bool)
        res_img, res_mm, stats = residual_image(
            frame.rgb, frame.depth, rendered, object_mask, self.residual_limit_mm
        )
        cards = []
        for i, obj in enumerate(objs):
            sel = (labels == obj.instance_id) & (index == i) & np.isfinite(res_mm)
            med = float(np.median(np.abs(res_mm[sel]))) if sel.any() else math.nan
            views = object_views(obj, cam, self.thumb_px)
            cards.append(
                _ObjectCard(
                    track_id=int(obj.track_id),
                    instance_id=int(obj.instance_id),
                    label=str(obj.label),
                    position=(
                        float(obj.pose.position[0]),
                        float(obj.pose.position[1]),
                        float(obj.pose.position[2]),
                    ),
                    extents=(float(obj.extents[0]), float(obj.extents[1]), float(obj.extents[2])),
                    visible_fraction=float(obj.visible_fraction),
                    confidence=float(obj.confidence),
                    score=float(obj.score),
                    vertices=len(obj.mesh.vertices),
                    faces=len(obj.mesh.faces),
                    residual_median_abs_mm=med,
                    front_png=png_bytes(views[0]) if views else None,
                    back_png=png_bytes(views[1]) if views else None,
                )
            )
        return replace(
            base,
            overlay_png=png_bytes(overlay),
            residual_png=png_bytes(res_img, nearest=True),
            residual=stats,
            objects=tuple(cards),
        )

    def finish(self, summary: dict[str, Any]) -> None:
        """Write ``out_dir/report.html``.

        Raises:
            ReportError: the file cannot be written (names the path and the OS error).
        """
        text = self.to_html(summary)
        path = self.path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except OSError as err:
            raise ReportError(f"cannot write report {str(path)!r}: {err}") from err
        logger.info(
            "report: %s (%d frames shown of %d, %.1f MB, of which images %.1f MB)",
            path,
            len(self._shown),
            len(self._series),
            len(text) / 1e6,
            sum(f.nbytes for f in self._shown.values()) * 4 / 3 / 1e6,
        )

    def to_html(self, summary: dict[str, Any]) -> str:
        """The whole report as one HTML document (string)."""
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>sam3d_ros replay report: {_e(Path(str(summary.get('bag', ''))).name)}</title>",
            f"<style>{_CSS}</style></head><body>",
            "<h1>sam3d_ros replay report</h1>",
            f"<p class='muted'>bag <code>{_e(summary.get('bag', '?'))}</code>, backend "
            f"<code>{_e(summary.get('backend', '?'))}</code></p>",
        ]
        n = len(self._series)
        if n == 0:
            parts.append(
                "<p class='warn'><b>No frames were processed.</b> See the skipped frames below "
                "(and summary.json) for the reasons.</p>"
            )
        parts.append(_summary_html(summary))
        if n:
            parts.append(self._plots_html())
            parts.append(self._frames_html())
        parts.append("</body></html>\n")
        return "\n".join(parts)

    def _plots_html(self) -> str:
        s = self._series
        xs = np.frombuffer(s.index, dtype=np.int64).astype(np.float64)
        latency = []
        keys = sorted(k for k in s.timings if k != "total")
        for j, k in enumerate(keys):
            latency.append((k, _STAGE_COLOURS[j % len(_STAGE_COLOURS)], np.frombuffer(s.timings[k]), 1.2))
        if "total" in s.timings:
            latency.append(("total", "#111111", np.frombuffer(s.timings["total"]), 2.0))
        marks = self.shown_indices
        objs = np.frombuffer(s.objects, dtype=np.int32).astype(np.float64)
        return (
            f"<h2>Per frame ({len(s)} processed frames)</h2>"
            "<p class='muted'>Dashed vertical lines mark the frames shown below. "
            f"{'Lines are min/max envelopes of ' + str(MAX_PLOT_BINS) + ' bins.' if len(s) > 2 * MAX_PLOT_BINS else ''}"
            "</p>"
            + svg_line_plot(latency, xs, title="Latency per frame", y_unit="ms", marks=marks)
            + svg_line_plot(
                [("objects", "#2b7bba", objs, 1.5)],
                xs,
                title="Objects per frame",
                y_unit="objects",
                marks=marks,
                integer=True,
            )
        )

    def _frames_html(self) -> str:
        if not self._shown:
            return "<h2>Frames</h2><p class='muted'>No frames rendered (max_frames = 0).</p>"
        out = [
            f"<h2>Frames ({len(self._shown)} shown: one every {self.stride} processed "
            f"frame{'s' if self.stride > 1 else ''})</h2>",
            "<nav class='toc'>"
            + " ".join(f"<a href='#frame-{i}'>#{i}</a>" for i in self.shown_indices)
            + "</nav>",
        ]
        for i in self.shown_indices:
            out.append(self._frame_html(self._shown[i]))
        return "\n".join(out)

    def _frame_html(self, f: _ShownFrame) -> str:
        total = f.timings_ms.get("total", math.nan)
        stages = ", ".join(f"{_e(k)} {v:.1f}" for k, v in sorted(f.timings_ms.items()) if k != "total")
        head = (
            f"<section class='frame' id='frame-{f.index}'><h3>Frame #{f.index} · stamp {f.stamp_ns} "
            f"({_stamp_iso(f.stamp_ns)}) · {len(f.objects)} object{'s' if len(f.objects) != 1 else ''} · "
            f"{total:.1f} ms</h3><p class='muted'>{_e(f.frame_id)}, {f.size[0]}x{f.size[1]} px; "
            f"stages (ms): {stages or 'none'}</p>"
        )
        body: list[str] = [head]
        if f.error:
            body.append(f"<p class='warn'>Could not render this frame: {_e(f.error)}</p>")
        if f.overlay_png is not None and f.residual_png is not None:
            r = f.residual
            if r is not None and r.pixels:
                rstats = (
                    f"|residual| median {r.median_abs_mm:.1f} mm, 90th percentile {r.p90_abs_mm:.1f} mm, "
                    f"signed median {r.median_mm:+.1f} mm over {r.pixels} px"
                )
            else:
                rstats = "no object pixel with both a rendered and an observed depth"
            if r is not None and r.uncovered:
                rstats += f"; {r.uncovered} mask px not covered by any mesh"
            body.append(
                "<div class='row'>"
                f"<figure>{_img(f.overlay_png, 'RGB with reprojected objects')}<figcaption>RGB with the "
                "reconstructed meshes reprojected (colour per track id)</figcaption></figure>"
                f"<figure>{_img(f.residual_png, 'depth residual')}<figcaption>Depth residual, rendered mesh "
                f"minus observed depth, on the object pixels: {rstats}"
                f"{_legend_svg(self.residual_limit_mm, f.index)}</figcaption></figure></div>"
            )
        if f.objects:
            body.append("<div class='cards'>")
            body.extend(_card_html(o) for o in f.objects)
            body.append("</div>")
        elif not f.error:
            body.append("<p class='muted'>No objects reconstructed in this frame.</p>")
        if f.skipped:
            items = "".join(
                f"<li>instance {iid}: <b>{_e(reason)}</b> {_e(detail)}</li>"
                for iid, reason, detail in f.skipped
            )
            body.append(
                f"<details><summary>{len(f.skipped)} object(s) skipped</summary><ul>{items}</ul></details>"
            )
        body.append("</section>")
        return "\n".join(body)


# --------------------------------------------------------------------------- HTML helpers

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1400px;
padding:0 1em;color:#1b1f24;background:#fafbfc}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #d0d7de}
h3{font-size:1.05em;margin:.2em 0}
.muted{color:#57606a}.warn{background:#fff4e5;border:1px solid #f0b429;padding:.6em;border-radius:4px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f0f3f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.tables{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.frame{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.8em;margin:1em 0}
.row{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figure img{max-width:100%;display:block}
figcaption{font-size:.9em;color:#57606a;max-width:640px}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin-top:.8em}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.4em;background:#f6f8fa;font-size:.85em}
.card .views{display:flex;gap:4px}.card .views div{text-align:center;color:#57606a}
.swatch{display:inline-block;width:.9em;height:.9em;vertical-align:middle;border:1px solid #888}
svg text{font:11px system-ui,sans-serif;fill:#333}.toc a{margin-right:.5em}code{font-size:.95em}
"""


def _e(value: Any) -> str:
    """HTML-escaped ``str(value)``."""
    return html.escape(str(value), quote=True)


def _stamp_iso(stamp_ns: int) -> str:
    try:
        t = dt.datetime.fromtimestamp(stamp_ns / 1e9, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "?"
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _img(png: bytes, alt: str, width: int | None = None) -> str:
    w = f" width='{width}' height='{width}'" if width else ""
    return f"<img alt='{_e(alt)}'{w} src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def _card_html(o: _ObjectCard) -> str:
    px = DEFAULT_THUMB_PX
    views = ""
    if o.front_png and o.back_png:
        views = (
            f"<div class='views'><div>{_img(o.front_png, 'from the camera')}from camera</div>"
            f"<div>{_img(o.back_png, 'from behind')}from behind (180° about z)</div></div>"
        )
    else:
        views = f"<div class='muted' style='width:{2 * px}px'>mesh not in front of the camera</div>"
    r, g, b = track_colour(o.track_id)
    pos = ", ".join(f"{v:+.3f}" for v in o.position)
    ext = " × ".join(f"{100 * v:.1f}" for v in o.extents)
    return (
        f"<div class='card'>{views}<div><span class='swatch' style='background:rgb({r},{g},{b})'></span> "
        f"<b>#{o.track_id}</b> {_e(o.label)} (instance {o.instance_id})<br>"
        f"position ({pos}) m<br>extents {ext} cm<br>"
        f"visible {100 * o.visible_fraction:.0f} % · confidence {o.confidence:.2f} · score {o.score:.2f}<br>"
        f"|residual| median {_fmt(o.residual_median_abs_mm, 1)} mm · {o.vertices} v / {o.faces} f</div></div>"
    )


def _legend_svg(limit_mm: float, uid: int) -> str:
    """Colour bar of the residual map (inline SVG) plus swatches for the special colours."""
    stops = "".join(f"<stop offset='{(t + 1) / 2:.3f}' stop-color='rgb{c}'/>" for t, c in _RESIDUAL_STOPS)
    w, h = 300, 44
    gid = f"resgrad{uid}"
    lim = f"{limit_mm:g}"
    return (
        f"<br><svg width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' aria-label='residual legend'>"
        f"<defs><linearGradient id='{gid}'>{stops}</linearGradient></defs>"
        f"<rect x='10' y='4' width='{w - 20}' height='14' fill='url(#{gid})' stroke='#888'/>"
        f"<text x='10' y='32' text-anchor='start'>≤ −{lim} mm (mesh in front)</text>"
        f"<text x='{w // 2}' y='32' text-anchor='middle'>0</text>"
        f"<text x='{w - 10}' y='32' text-anchor='end'>≥ +{lim} mm (behind)</text></svg>"
        f"<br><span class='swatch' style='background:rgb{_UNCOVERED_RGB}'></span> mask not covered by a mesh "
        f"<span class='swatch' style='background:rgb{_NO_DEPTH_RGB}'></span> no observed depth"
    )


def _kv_table(title: str, rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{_e(k)}</th><td class='{'num' if isinstance(v, (int, float)) else ''}'>{_e(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table><caption><b>{_e(title)}</b></caption>{body}</table>"


def _summary_html(summary: dict[str, Any]) -> str:
    """Summary tables from the replay's summary dict (tolerates missing keys)."""
    skipped: dict[str, int] = dict(summary.get("frames_skipped") or {})
    obj_skipped: dict[str, int] = dict(summary.get("objects_skipped") or {})
    frames = [
        ("messages read", summary.get("messages_read", "?")),
        ("frames synchronised", summary.get("frames_synchronized", "?")),
        ("frames processed", summary.get("frames_processed", "?")),
        ("frames skipped", sum(int(v) for v in skipped.values())),
    ]
    frames += [(f"  skipped: {k}", v) for k, v in sorted(skipped.items())]
    frames += [
        ("unmatched messages", summary.get("unmatched_messages", "?")),
        ("objects reconstructed", summary.get("objects", "?")),
        ("objects skipped", sum(int(v) for v in obj_skipped.values())),
    ]
    frames += [(f"  skipped: {k}", v) for k, v in sorted(obj_skipped.items())]
    frames += [
        ("wall time (s)", summary.get("wall_s", "?")),
        ("throughput (frames/s)", summary.get("throughput_fps", "?")),
        ("backend", summary.get("backend", "?")),
    ]
    topics = dict(summary.get("topics") or {})
    topic_rows = [(k, v) for k, v in topics.items()]
    outputs = dict(summary.get("outputs") or {})
    out_rows = [(k, v if v is not None else "-") for k, v in outputs.items()]
    timing_rows = ""
    for stage, t in dict(summary.get("timings_ms") or {}).items():
        t = dict(t)
        timing_rows += (
            f"<tr><th>{_e(stage)}</th>"
            + "".join(f"<td class='num'>{_e(t.get(k, '?'))}</td>" for k in ("median", "mean", "max"))
            + "</tr>"
        )
    timings = (
        "<table><caption><b>Latency per stage (ms)</b></caption><tr><th>stage</th><th>median</th>"
        f"<th>mean</th><th>max</th></tr>{timing_rows}</table>"
        if timing_rows
        else ""
    )
    examples = list(summary.get("skip_examples") or [])
    ex_html = ""
    if examples:
        items = "".join(
            f"<tr><td class='num'>{_e(x.get('stamp_ns', '?'))}</td><td>{_e(x.get('reason', '?'))}</td>"
            f"<td>{_e(x.get('detail', ''))}</td></tr>"
            for x in examples[:50]
        )
        more = f" (first 50 of {len(examples)})" if len(examples) > 50 else ""
        ex_html = (
            f"<details><summary>Skipped frames{more}</summary><table><tr><th>stamp_ns</th><th>reason</th>"
            f"<th>detail</th></tr>{items}</table></details>"
        )
    return (
        "<h2>Summary</h2><div class='tables'>"
        + _kv_table("Frames and objects", frames)
        + timings
        + (_kv_table("Topics", topic_rows) if topic_rows else "")
        + (_kv_table("Outputs", out_rows) if out_rows else "")
        + "</div>"
        + ex_html
    )


def _nice_ceil(x: float) -> float:
    """Smallest of 1, 2, 2.5, 5, 10 times a power of ten that is >= ``x`` (> 0)."""
    if not math.isfinite(x) or x <= 0:
        return 1.0
    p = 10.0 ** math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * p >= x * (1 - 1e-12):
            return m * p
    return 10.0 * p


def _envelope(
    xs: NDArray[np.float64], ys: NDArray[np.float64], bins: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Reduce a long series to a min/max envelope: per bin, (x, min) then (x, max); NaN
    ignored (a bin of only NaN stays NaN)."""
    n = len(xs)
    edges = np.linspace(0, n, bins + 1).astype(np.int64)
    edges = np.unique(edges[:-1])
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(ys, edges)
        hi = np.fmax.reduceat(ys, edges)
    centres = np.add.reduceat(xs, edges) / np.diff(np.append(edges, n))
    return np.repeat(centres, 2), np.column_stack([lo, hi]).reshape(-1)


def svg_line_plot(
    series: Sequence[tuple[str, str, NDArray[np.float64], float]],
    xs: NDArray[np.float64],
    *,
    title: str,
    y_unit: str,
    marks: Sequence[int] = (),
    width: int = 960,
    height: int = 230,
    integer: bool = False,
) -> str:
    """An inline SVG line plot (no JavaScript).

    Args:
        series: (name, CSS colour, ys (N,) float64 with NaN gaps, stroke width).
        xs: (N,) x values (frame indices).
        title, y_unit: texts.
        marks: x values marked with dashed vertical lines.
        integer: y ticks at integers only.
    """
    ml, mr, mt, mb = 58, 14, 26, 30
    pw, ph = width - ml - mr, height - mt - mb
    n = len(xs)
    x0, x1 = (float(xs[0]), float(xs[-1])) if n else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    finite = [s[2][np.isfinite(s[2])] for s in series]
    ymax = max((float(f.max()) for f in finite if f.size), default=1.0)
    ymax = _nice_ceil(max(ymax, 1.0 if integer else 1e-3) * 1.05)

    def px(x: NDArray[np.float64] | float) -> Any:
        return ml + (np.asarray(x) - x0) / (x1 - x0) * pw

    def py(y: NDArray[np.float64] | float) -> Any:
        return mt + ph - np.asarray(y) / ymax * ph

    out = [
        f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' "
        f"aria-label='{_e(title)}' style='background:#fff;border:1px solid #d0d7de;max-width:100%'>",
        f"<text x='{ml}' y='16' style='font-weight:600'>{_e(title)}</text>",
    ]
    step = ymax / 5
    if integer:
        step = max(1.0, math.ceil(step))
    y = 0.0
    while y <= ymax + 1e-9:
        yy = float(py(y))
        label = f"{y:g}"
        out.append(
            f"<line x1='{ml}' x2='{ml + pw}' y1='{yy:.1f}' y2='{yy:.1f}' stroke='#eee'/>"
            f"<text x='{ml - 6}' y='{yy + 4:.1f}' text-anchor='end'>{label}</text>"
        )
        y += step
    out.append(
        f"<text x='12' y='{mt + ph / 2:.0f}' transform='rotate(-90 12 {mt + ph / 2:.0f})' "
        f"text-anchor='middle'>{_e(y_unit)}</text>"
    )
    x_step = max(1.0, _nice_ceil((x1 - x0) / 6))
    xv = math.ceil(x0 / x_step) * x_step
    while xv <= x1 + 1e-9:
        xx = float(px(xv))
        out.append(
            f"<line x1='{xx:.1f}' x2='{xx:.1f}' y1='{mt + ph}' y2='{mt + ph + 4}' stroke='#999'/>"
            f"<text x='{xx:.1f}' y='{mt + ph + 16}' text-anchor='middle'>{xv:.0f}</text>"
        )
        xv += x_step
    out.append(f"<text x='{ml + pw}' y='{height - 2}' text-anchor='end'>processed frame index</text>")
    for m in marks:
        xx = float(px(float(m)))
        out.append(
            f"<line x1='{xx:.1f}' x2='{xx:.1f}' y1='{mt}' y2='{mt + ph}' stroke='#bbb' stroke-dasharray='3,3'>"
            f"<title>shown frame #{m}</title></line>"
        )
    out.append(f"<rect x='{ml}' y='{mt}' width='{pw}' height='{ph}' fill='none' stroke='#999'/>")
    legend_x = ml + pw
    for name, colour, ys, stroke in series:
        sx, sy = (xs, ys) if n <= 2 * MAX_PLOT_BINS else _envelope(xs, ys, MAX_PLOT_BINS)
        pts_x, pts_y = px(sx), py(sy)
        ok = np.isfinite(pts_y)
        # split into runs of finite values
        breaks = np.flatnonzero(np.diff(ok.astype(np.int8)) != 0) + 1
        f_ok = ok[np.r_[0, breaks]] if len(ok) else np.array([], dtype=bool)
        segs = np.split(np.arange(len(ok)), breaks)
        fin = sy[np.isfinite(sy)]
        tip = f"{name}: median {np.median(fin):.3g}, max {fin.max():.3g} {y_unit}" if fin.size else name
        out.append(f"<g><title>{_e(tip)}</title>")
        for seg, good in zip(segs, f_ok, strict=True):
            if not good or not len(seg):
                continue
            if len(seg) == 1:
                out.append(
                    f"<circle cx='{pts_x[seg[0]]:.1f}' cy='{pts_y[seg[0]]:.1f}' r='2' fill='{colour}'/>"
                )
                continue
            pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(pts_x[seg], pts_y[seg], strict=True))
            out.append(
                f"<polyline points='{pts}' fill='none' stroke='{colour}' stroke-width='{stroke}' "
                "stroke-linejoin='round'/>"
            )
        out.append("</g>")
        label_w = 8 + 7 * len(name) + 18
        legend_x -= label_w
        out.append(
            f"<line x1='{legend_x}' x2='{legend_x + 14}' y1='12' y2='12' stroke='{colour}' stroke-width='3'/>"
            f"<text x='{legend_x + 18}' y='16'>{_e(name)}</text>"
        )
    out.append("</svg>")
    return "<div>" + "".join(out) + "</div>"

"""Timing machinery shared by ``scripts/bench_network.py`` and the GPU check.

Synthetic frames (ray-cast 640x480 tabletop scenes with the depth noise model; nothing
read from disk), the network's per-object time on a batch of real encodings, and the
node's per-frame work (the pipeline's stages plus, where the ROS messages are importable,
building the output messages). All times are wall-clock milliseconds
(``time.perf_counter``); summaries are medians.

Scenes of up to :data:`sam3d_ros.sim.scenes.MAX_OBJECTS` objects come from
:func:`sam3d_ros.sim.scenes.random_scene` (the frames ``bench_network.py`` always
measured); busier frames (10, 20 objects) from :func:`crowded_scene`, a grid of random
boxes, cylinders and spheres seen from above the table.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.backends.learned import LearnedBackend
from sam3d_ros.core.backend import Backend
from sam3d_ros.core.config import NodeConfig, PipelineConfig
from sam3d_ros.core.encoding import GridFrame, encode_objects
from sam3d_ros.core.frames import make_transform
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import FrameResult, RGBDFrame, SceneContext
from sam3d_ros.sim.noise import DepthNoiseConfig, apply_depth_noise
from sam3d_ros.sim.raycast import Box, Cylinder, Scene, SceneObject, Shape, Sphere, Table, look_at, render
from sam3d_ros.sim.scenes import MAX_OBJECTS, d435_intrinsics, random_scene, render_sequence, sequence
from sam3d_ros.stream.conversions import messages_from_frame
from sam3d_ros.stream.frames import FrameSet, FrameStream

logger = logging.getLogger(__name__)

#: Seeds of the benchmark frames (disjoint from the tests' and the generator's seeds).
SEED_BASE: Final[int] = 4_000_000
#: Grid pitch of :func:`crowded_scene` (m) and its objects' size range (m).
CROWD_PITCH_M: Final[float] = 0.15
CROWD_SIZE_RANGE_M: Final[tuple[float, float]] = (0.04, 0.10)
#: Camera elevation above the table (degrees) and distance margin of crowded scenes.
CROWD_ELEVATION_DEG: Final[float] = 55.0
CROWD_FIT_MARGIN: Final[float] = 1.15
#: Calls made before timing (allocations, lazy initialisation, CUDA context).
WARMUP_CALLS: Final[int] = 3
#: Name of the per-frame stage that builds the node's output messages.
MESSAGES_STAGE: Final[str] = "messages"
#: Stamp period (ns) of the re-stamped passes over a camera sequence.
SEQUENCE_PERIOD_NS: Final[int] = 100_000_000

MessageBuilder = Callable[[FrameResult], None]


class BenchError(RuntimeError):
    """Raised for an unusable benchmark workload (no encodable object, no frame)."""


@dataclass(frozen=True)
class PipelineTiming:
    """Per-frame timings of the node's work on a set of frames.

    Attributes:
        frame_ms: per processed frame, pipeline + messages (ms).
        stages_ms: stage name -> per-frame ms (the pipeline's stages, plus
            :data:`MESSAGES_STAGE` when messages were built).
        objects: per processed frame, the number of reconstructed objects.
    """

    frame_ms: tuple[float, ...]
    stages_ms: dict[str, tuple[float, ...]] = field(default_factory=dict)
    objects: tuple[int, ...] = ()

    def stage_medians(self) -> dict[str, float]:
        """Stage name -> median ms per frame, rounded to 0.1 ms."""
        return {k: round(statistics.median(v), 1) for k, v in self.stages_ms.items()}


def crowded_scene(seed: int, n_objects: int, width: int = 640, height: int = 480) -> Scene:
    """``n_objects`` random boxes, cylinders and spheres on a square grid of pitch
    :data:`CROWD_PITCH_M` (any count; no two footprints overlap), labels 1..n."""
    rng = np.random.default_rng(seed)
    cols = max(1, math.ceil(math.sqrt(n_objects)))
    lo, hi = CROWD_SIZE_RANGE_M
    objects: list[SceneObject] = []
    for i in range(n_objects):
        x = (i % cols - (cols - 1) / 2) * CROWD_PITCH_M
        y = (i // cols - (math.ceil(n_objects / cols) - 1) / 2) * CROWD_PITCH_M
        kind = int(rng.integers(3))
        yaw = float(rng.uniform(-math.pi, math.pi))
        c, s = math.cos(yaw), math.sin(yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        shape: Shape
        if kind == 0:
            sx, sy, sz = (float(v) for v in rng.uniform(lo, hi, 3))
            shape = Box((sx, sy, sz), make_transform(rot, np.array([x, y, sz / 2])))
        elif kind == 1:
            d, h = (float(v) for v in rng.uniform(lo, hi, 2))
            shape = Cylinder(d / 2, h, make_transform(np.eye(3), np.array([x, y, h / 2])))
        else:
            r = float(rng.uniform(lo, hi)) / 2
            shape = Sphere(r, make_transform(np.eye(3), np.array([x, y, r])))
        colour = tuple(int(v) for v in rng.integers(40, 230, 3))
        objects.append(SceneObject(label=i + 1, shape=shape, color=(colour[0], colour[1], colour[2])))
    return Scene(objects=tuple(objects), table=Table(center_xy=(0.0, 0.0), half_extents_xy=(0.9, 0.7)))


def _crowded_frame(seed: int, n_objects: int) -> RGBDFrame:
    scene = crowded_scene(seed, n_objects)
    k = d435_intrinsics()
    radius = max(
        float(np.linalg.norm(o.shape.world_T_object[:2, 3])) + o.shape.bounding_radius for o in scene.objects
    )
    half_fov = min(math.atan2(k.width / 2, k.fx), math.atan2(k.height / 2, k.fy))
    dist = CROWD_FIT_MARGIN * radius / math.sin(half_fov)
    azimuth = float(np.random.default_rng(seed + 1).uniform(-math.pi, math.pi))
    el = math.radians(CROWD_ELEVATION_DEG)
    eye = dist * np.array([math.cos(el) * math.cos(azimuth), math.cos(el) * math.sin(azimuth), math.sin(el)])
    r = render(scene, look_at(eye, np.zeros(3), k))
    r = r.with_depth(apply_depth_noise(r.depth, np.random.default_rng(seed), DepthNoiseConfig()))
    return r.to_rgbd_frame()


def synthetic_frames(n: int, n_objects: int, seed_base: int = SEED_BASE) -> list[RGBDFrame]:
    """``n`` noisy 640x480 frames with ``n_objects`` objects each (deterministic).

    Up to :data:`MAX_OBJECTS` objects: :func:`random_scene` (seeds ``seed_base + i``, as
    ``bench_network.py`` always used); more: :func:`crowded_scene`.
    """
    out = []
    for i in range(n):
        if n_objects <= MAX_OBJECTS:
            r = random_scene(seed_base + i, n_objects=n_objects).render()
            r = r.with_depth(apply_depth_noise(r.depth, np.random.default_rng(i), DepthNoiseConfig()))
            out.append(r.to_rgbd_frame())
        else:
            out.append(_crowded_frame(seed_base + 1000 * n_objects + i, n_objects))
    return out


def encode_frames(
    frames: Sequence[RGBDFrame], config: PipelineConfig
) -> tuple[NDArray[np.float32], list[GridFrame], list[float]]:
    """Encode every object of ``frames`` as the learned backends do.

    Returns:
        (inputs (N, C, n, n, n) float32 of all encodable objects, their grid frames in the
        same order, encoding ms per object for each frame).
    """
    feats: list[NDArray[np.float32]] = []
    grids: list[GridFrame] = []
    enc_ms: list[float] = []
    for fr in frames:
        scene = SceneContext(frame=fr, plane=estimate_support_plane(fr, config))
        obs, _ = extract_observations(fr, config)
        t0 = time.perf_counter()
        x, gfs = encode_objects(scene, obs)
        enc_ms.append((time.perf_counter() - t0) * 1000.0 / max(len(obs), 1))
        feats.append(x)
        grids.extend(g for g in gfs if g is not None)
    inputs = np.concatenate(feats) if feats else np.zeros((0, 1, 1, 1, 1), np.float32)
    return np.ascontiguousarray(inputs, dtype=np.float32), grids, enc_ms


def batch_of(inputs: NDArray[np.float32], batch: int) -> NDArray[np.float32]:
    """The first ``batch`` rows of ``inputs``, repeating rows when there are fewer."""
    if len(inputs) == 0:
        raise BenchError(f"no encoded objects to make a batch of {batch} from")
    reps = math.ceil(batch / len(inputs))
    return np.ascontiguousarray(np.concatenate([inputs] * reps)[:batch])


def time_network(
    backend: LearnedBackend, batch: NDArray[np.float32], repeats: int, stage: str | None = None
) -> list[float]:
    """Milliseconds per object of ``repeats`` calls of ``backend.infer(batch, stage)`` (after
    :data:`WARMUP_CALLS` untimed calls); ``stage`` None: every stage of the model in turn
    (both graphs of a two-stage model, on the same batch), timed together."""
    stages = tuple(backend.stages) if stage is None else (stage,)

    def call() -> None:
        for st in stages:
            backend.infer(batch, st)

    for _ in range(WARMUP_CALLS):
        call()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000.0 / len(batch))
    return out


def camera_sequence(
    n_views: int, n_objects: int, arc_deg: float, seed: int = SEED_BASE + 500
) -> tuple[list[RGBDFrame], list[NDArray[np.float64]]]:
    """A camera moving along an arc of ``arc_deg`` degrees around one noisy 640x480 scene
    of ``n_objects`` objects (:func:`sam3d_ros.sim.scenes.sequence`), there and back
    (views 0 .. n-1 .. 1, so repeating it has no jump): the frames and each frame's camera
    pose in the world (4x4 float64, ``world_T_camera``); ``arc_deg`` 0: a static camera
    (the depth noise still differs per frame)."""
    views = sequence(seed, n_views, n_objects, arc_deg=arc_deg)
    rendered = render_sequence(views, noise=DepthNoiseConfig(), noise_seed=seed)
    order = list(range(n_views)) + list(range(n_views - 2, 0, -1))
    frames = [rendered[i].to_rgbd_frame() for i in order]
    poses = [np.asarray(views[i].camera.world_T_camera, dtype=np.float64) for i in order]
    return frames, poses


def time_pipeline(
    config: NodeConfig,
    backend: Backend,
    frames: Sequence[RGBDFrame],
    passes: int,
    build_messages: MessageBuilder | None = None,
    poses: Sequence[NDArray[np.float64]] | None = None,
) -> PipelineTiming:
    """The node's work per frame: :meth:`FrameStream.process` (decode of the image
    messages, camera pose, pipeline, counters: the one frame path the node and the replay
    run) plus ``build_messages`` (timed as :data:`MESSAGES_STAGE`; None: not measured),
    ``passes`` times over ``frames`` after one untimed frame. The messages are built once
    beforehand (:func:`messages_from_frame`). Convex decomposition is excluded (the node
    runs it asynchronously). The pipeline is closed afterwards; ``backend`` is not.
    ``config``: the node's parameters (the stream's; the pipeline gets ``config.pipeline``).
    ``poses``: one camera pose per frame in the planning frame (what tf2 gives the node:
    the stream's pose lookup returns it), the frames re-stamped so that stamps increase
    over the passes (a sequence, tracked and fused across passes); None: the static
    transform, each pass with the frames' own stamps.

    Raises:
        BenchError: no frames, a pose per frame missing, or a frame the stream skipped
            (with its reason).
    """
    if not frames:
        raise BenchError("time_pipeline needs at least one frame")
    if poses is not None and len(poses) != len(frames):
        raise BenchError(f"{len(poses)} poses for {len(frames)} frames")
    by_stamp: dict[int, NDArray[np.float64]] = {}

    def lookup(_cfg: NodeConfig, _frame_id: str, stamp_ns: int) -> NDArray[np.float64] | None:
        return by_stamp.get(stamp_ns)

    pipe = FramePipeline(config.pipeline, backend)
    stream = FrameStream(
        config, pipe, ("rgb", "depth", "mask"), lambda _set: None, pose_lookup=lookup if poses else None
    )

    def sets_of(pass_index: int) -> list[FrameSet]:
        out = []
        for i, fr in enumerate(frames):
            if poses is not None:
                fr = replace(fr, stamp_ns=fr.stamp_ns + (pass_index * len(frames) + i) * SEQUENCE_PERIOD_NS)
                by_stamp[fr.stamp_ns] = np.asarray(poses[i], dtype=np.float64)
            rgb, depth, info, mask = messages_from_frame(fr)
            out.append(FrameSet(rgb, depth, mask, info, fr.stamp_ns, 0, True))
        return out

    def run(frame_set: FrameSet) -> FrameResult:
        out = stream.process(frame_set)
        if out is None:
            raise BenchError(f"frame {frame_set.stamp_ns} was skipped: {stream.stats.snapshot().last_skip}")
        return out.update.result

    try:
        sets = [sets_of(0)]
        sets += [sets_of(p + 1) if poses is not None else sets[0] for p in range(passes)]
        run(sets[0][0])
        frame_ms: list[float] = []
        stages: dict[str, list[float]] = {}
        objects: list[int] = []
        for pass_sets in sets[1:]:
            for frame_set in pass_sets:
                t0 = time.perf_counter()
                r = run(frame_set)
                t1 = time.perf_counter()
                if build_messages is not None:
                    build_messages(r)
                t2 = time.perf_counter()
                frame_ms.append((t2 - t0) * 1000.0)
                objects.append(len(r.objects))
                for k, v in r.timings_ms.items():
                    if k != "total":
                        stages.setdefault(k, []).append(v)
                if build_messages is not None:
                    stages.setdefault(MESSAGES_STAGE, []).append((t2 - t1) * 1000.0)
    finally:
        pipe.close()
    return PipelineTiming(
        frame_ms=tuple(frame_ms), stages_ms={k: tuple(v) for k, v in stages.items()}, objects=tuple(objects)
    )


def ros_message_builder(alpha: float) -> MessageBuilder | None:
    """A :data:`MessageBuilder` with the node's output messages, or None when the ROS
    message packages are not importable."""
    try:
        from sam3d_ros.ros import builders
    except ImportError:
        return None

    def build(result: FrameResult) -> None:
        builders.frame_output_msgs(result, set(), alpha)

    return build

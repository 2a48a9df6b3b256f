"""Parameters, declared once: name, type, default, range, description, and the config
that holds the value.

The ROS node declares its parameters from :data:`PARAMETERS` (with descriptors and ranges),
``config/default.yaml`` holds the same defaults. The values land in two frozen configs:

* :class:`PipelineConfig` (``part="pipeline"``): what the core and the backends read
  (backend options, input validation, objects, support plane, completion and meshing,
  collision shapes, tracking and fusion, the planning frame); built by
  :func:`config_from_mapping`, defaults from :func:`default_config`;
* :class:`NodeConfig` (``part="node"``): what the node and its frame path read (topics,
  input QoS, synchronisation, the stamp gate, the image size limit, tf2, MoveIt, outputs,
  diagnostics, counters), with the :class:`PipelineConfig` in ``pipeline``; built by
  :func:`node_config_from_mapping`, :func:`config_from_params_file` and the node's
  ``load_config``, defaults from :func:`default_node_config`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal

from sam3d_ros.core import constants as C


class ConfigError(ValueError):
    """Raised for unknown parameters, wrong types or values out of range."""


#: Which frozen config holds a parameter's value (:attr:`ParamSpec.part`).
ConfigPart = Literal["pipeline", "node"]
#: The core's :class:`PipelineConfig` (read by the core and the backends).
PIPELINE: Final = "pipeline"
#: The node's :class:`NodeConfig` (read by the node and the frame path).
NODE: Final = "node"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its type (bool, int, float or str), default, inclusive range and
    description. ``choices`` restricts string values; ``read_only`` parameters cannot change
    while the node runs; ``part`` names the config that holds the value: :data:`PIPELINE`
    (:class:`PipelineConfig`) or :data:`NODE` (:class:`NodeConfig`)."""

    name: str
    type: type
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False
    part: ConfigPart = PIPELINE


PARAMETERS: tuple[ParamSpec, ...] = (
    # --- backend -------------------------------------------------------------------------
    ParamSpec(
        "backend",
        str,
        "auto",
        "Reconstruction backend: auto (tensorrt with an NVIDIA GPU and TensorRT, else "
        "onnxruntime, else geometric), tensorrt, onnxruntime, torch (reference) or geometric "
        "(non-learned); see sam3d_ros.backends.registry.",
        read_only=True,
    ),
    ParamSpec(
        "model_dir",
        str,
        "",
        "Network backends: directory with manifest.json and the model files "
        "(empty: $SAM3D_MODEL_DIR, else the package's models/).",
        read_only=True,
    ),
    ParamSpec(
        "ort_threads",
        int,
        2,
        "onnxruntime backend: intra-op CPU threads (0: ONNX Runtime's default).",
        min=0,
        max=256,
        read_only=True,
    ),
    ParamSpec(
        "blas_threads",
        int,
        1,
        "Threads of numpy's BLAS in this process (0: leave as is). More than 1 lets idle BLAS threads spin on the cores the network runtime needs; the pipeline's matrices are small.",
        min=0,
        max=256,
        read_only=True,
    ),
    ParamSpec(
        "ort_use_cuda",
        bool,
        True,
        "onnxruntime backend: use the CUDA execution provider when it is available.",
        read_only=True,
    ),
    ParamSpec(
        "trt_precision",
        str,
        "fp16",
        "tensorrt backend: engine precision.",
        choices=("fp16", "fp32"),
        read_only=True,
    ),
    ParamSpec(
        "engine_cache_dir",
        str,
        "",
        "tensorrt backend: engine and timing cache directory "
        "(empty: $SAM3D_ENGINE_CACHE, else ~/.cache/sam3d_ros/engines).",
        read_only=True,
    ),
    # --- topics (the node subscribes to these; remap as usual) ---------------------------
    ParamSpec("rgb_topic", str, C.DEFAULT_RGB_TOPIC, "Colour image topic.", read_only=True, part=NODE),
    ParamSpec(
        "depth_topic", str, C.DEFAULT_DEPTH_TOPIC, "Depth aligned to colour.", read_only=True, part=NODE
    ),
    ParamSpec(
        "info_topic", str, C.DEFAULT_INFO_TOPIC, "CameraInfo of the colour image.", read_only=True, part=NODE
    ),
    ParamSpec(
        "mask_topic",
        str,
        C.DEFAULT_MASK_TOPIC,
        "Instance label image (0 = background).",
        read_only=True,
        part=NODE,
    ),
    ParamSpec(
        "input_reliability",
        str,
        "best_effort",
        "QoS reliability of the four input subscriptions: best_effort (sensor data, matches "
        "every publisher; messages can be lost between processes) or reliable (nothing is lost, "
        "needs reliable publishers such as sam3d_ros.ros.player).",
        choices=("best_effort", "reliable"),
        read_only=True,
        part=NODE,
    ),
    # --- synchronisation -----------------------------------------------------------------
    ParamSpec(
        "sync_slop",
        float,
        0.05,
        "Approximate-time sync: max stamp spread of a set, also between a set and its CameraInfo (s).",
        min=0.0,
        max=5.0,
        read_only=True,
        part=NODE,
    ),
    ParamSpec(
        "sync_queue_size",
        int,
        10,
        "Approximate-time sync: messages kept per topic (also the input QoS depth and the sets "
        "that may wait for their CameraInfo).",
        min=1,
        max=1000,
        read_only=True,
        part=NODE,
    ),
    ParamSpec(
        "stamp_jump_threshold",
        float,
        C.STAMP_JUMP_THRESHOLD_S,
        "A frame stamped further than this from the last accepted one (either way) is skipped "
        "(stamp_jump) until a second frame confirms the jump (a restart when time went back); "
        "for a slow stream the threshold grows to 3 times its median frame interval (s).",
        min=0.001,
        max=86400.0,
        read_only=True,
        part=NODE,
    ),
    ParamSpec(
        "max_stamp_ahead",
        float,
        C.STAMP_MAX_AHEAD_OF_CLOCK_S,
        "A frame stamped further than this ahead of the node's clock is skipped (future_stamp); "
        "0: no check (s).",
        min=0.0,
        max=86400.0,
        read_only=True,
        part=NODE,
    ),
    # --- input validation ------------------------------------------------------------------
    ParamSpec("depth_min", float, 0.1, "Depths below this are invalid (m).", min=0.0, max=100.0),
    ParamSpec("depth_max", float, 5.0, "Depths above this are invalid (m).", min=0.01, max=100.0),
    ParamSpec(
        "max_image_pixels",
        int,
        16_777_216,
        "Frames with more pixels are rejected.",
        min=1,
        max=1_000_000_000,
        part=NODE,
    ),
    # --- objects -----------------------------------------------------------------------
    ParamSpec("min_mask_pixels", int, 50, "Masks with fewer pixels are skipped.", min=1, max=10_000_000),
    ParamSpec(
        "min_depth_points",
        int,
        30,
        "Objects with fewer valid depth points are skipped.",
        min=C.MIN_OBJECT_POINTS,
        max=10_000_000,
    ),
    ParamSpec(
        "max_objects", int, 32, "At most this many objects per frame (largest masks first).", min=1, max=1024
    ),
    ParamSpec(
        "mask_erosion_px", int, 2, "Erode each mask by this many pixels before using depth.", min=0, max=20
    ),
    ParamSpec(
        "outlier_std_ratio",
        float,
        2.5,
        "Statistical outlier removal: threshold on the mean distance to the 8 pixel-grid neighbours, in standard deviations.",
        min=0.5,
        max=10.0,
    ),
    # --- support plane ---------------------------------------------------------------------
    ParamSpec(
        "plane_distance_threshold",
        float,
        0.008,
        "RANSAC inlier distance for the support plane (m).",
        min=0.0005,
        max=0.1,
    ),
    ParamSpec(
        "plane_ransac_iterations", int, 200, "RANSAC iterations for the support plane.", min=10, max=10000
    ),
    # --- shape completion and meshing ------------------------------------------------------
    ParamSpec(
        "mesh_resolution", int, 48, "Voxels along the longest side of an object's grid.", min=8, max=192
    ),
    ParamSpec(
        "min_voxel_size",
        float,
        0.002,
        "Smallest voxel edge (m); caps detail on small objects.",
        min=C.MIN_VOXEL_SIZE,
        max=C.MAX_VOXEL_SIZE,
    ),
    ParamSpec(
        "use_symmetry",
        bool,
        True,
        "Geometric backend: mirror the footprint to complete the back.",
    ),
    ParamSpec(
        "max_completion_depth",
        float,
        0.3,
        "Geometric backend: the completed shape never extends "
        "further than this behind the observed surface (m).",
        min=0.01,
        max=2.0,
    ),
    ParamSpec("occupancy_threshold", float, 0.5, "Iso-level of the occupancy surface.", min=0.05, max=0.95),
    ParamSpec(
        "surface_refinement",
        bool,
        True,
        "Honour the measured depth: empty the voxels the camera saw through, occupy the voxels "
        "holding measured surface that joins the shape, and move the seen surface of each mesh "
        "onto the measured depth (sam3d_ros.core.refine).",
    ),
    ParamSpec(
        "local_support",
        bool,
        True,
        "Find what each object rests on (the table, or the top of another object) from the "
        "depth where its mask meets its neighbours; a stacked object's shape is cut below its "
        "support's top instead of being completed down to the table (sam3d_ros.core.support).",
    ),
    ParamSpec(
        "output_mesh_max_triangles",
        int,
        1000,
        "Published object meshes are decimated to at most this many triangles (0: no limit).",
        min=0,
        max=10_000_000,
    ),
    # --- collision shapes ------------------------------------------------------------------
    ParamSpec(
        "collision_shapes",
        str,
        "hull,primitive",
        "Collision shapes to compute and publish, comma-separated, several at once: hull, "
        "decomposition (convex parts, asynchronous), primitive (best box/cylinder/sphere under "
        "primitive_max_fit_error), simplified (mesh under simplified_max_triangles).",
    ),
    ParamSpec(
        "decomposition_method",
        str,
        "coacd",
        "Convex decomposition library (falls back to the other one when not installed).",
        choices=("coacd", "vhacd"),
    ),
    ParamSpec("decomposition_max_parts", int, 8, "At most this many convex parts per object.", min=1, max=64),
    ParamSpec(
        "decomposition_max_part_vertices",
        int,
        64,
        "At most this many vertices per convex part (conservatively reduced).",
        min=8,
        max=1024,
    ),
    ParamSpec(
        "decomposition_time_budget",
        float,
        20.0,
        "Seconds a decomposition may take; slower jobs are stopped and the hull stays.",
        min=0.1,
        max=600.0,
    ),
    ParamSpec(
        "decomposition_threshold",
        float,
        0.05,
        "CoACD concavity threshold (smaller: more, tighter parts).",
        min=0.01,
        max=1.0,
    ),
    ParamSpec(
        "primitive_max_fit_error",
        float,
        0.01,
        "A fitted primitive is only offered when its mean surface distance is below this (m).",
        min=0.0,
        max=1.0,
    ),
    ParamSpec(
        "simplified_max_triangles",
        int,
        500,
        "Triangle budget of the simplified collision mesh.",
        min=4,
        max=1_000_000,
    ),
    ParamSpec(
        "collision_padding_observed",
        float,
        0.0,
        "Inflate collision shapes by this margin where the surface was observed (m).",
        min=0.0,
        max=0.5,
    ),
    ParamSpec(
        "collision_padding_completed",
        float,
        0.0,
        "Inflate collision shapes by this margin where the surface was completed (unseen) (m).",
        min=0.0,
        max=0.5,
    ),
    ParamSpec(
        "shape_change_threshold",
        float,
        0.1,
        "Relative convex-hull volume change that makes a new collision geometry version "
        "(new decomposition, MoveIt ADD).",
        min=0.0,
        max=10.0,
    ),
    ParamSpec(
        "shape_change_min_distance",
        float,
        C.SHAPE_CHANGE_MIN_DISTANCE,
        "A new collision geometry version also needs the hull's surface to move by more than "
        "this on average (m): the hull volume change over the hull area (a small object's "
        "converging shape is not re-ADDed for sub-millimetre changes; 0 = volume test only).",
        min=0.0,
        max=0.5,
    ),
    # --- tracking and fusion ---------------------------------------------------------------
    ParamSpec("track_use_labels", bool, True, "Prefer the mask label kept by the upstream segmenter."),
    ParamSpec(
        "track_max_distance",
        float,
        0.1,
        "Largest centroid distance (m) for associating an object with a track.",
        min=0.001,
        max=10.0,
    ),
    ParamSpec(
        "track_move_threshold",
        float,
        0.02,
        "A track moved when its position changed by more than this since the last report "
        "and its last reported shape no longer lies within this of the current one (m).",
        min=0.0,
        max=10.0,
    ),
    ParamSpec(
        "track_max_missed",
        int,
        5,
        "A track vanishes after this many consecutive frames without its object.",
        min=1,
        max=100_000,
    ),
    ParamSpec(
        "fusion_enabled",
        bool,
        False,
        "Fuse each track's observations over frames in planning_frame (observed surface "
        "and observed free space replace completed guesses; with a moving camera set "
        "planning_frame so that tf2 gives the camera's motion).",
    ),
    ParamSpec(
        "planning_frame",
        str,
        "",
        "Fixed frame for tracking, fusion and MoveIt; empty: the camera frame of the input.",
    ),
    ParamSpec(
        "camera_to_planning_transform",
        str,
        "0 0 0 0 0 0 1",
        "Static pose of the camera optical frame in planning_frame: 'x y z qx qy qz qw' (m); "
        "used when tf2 is not (use_tf false or tf2_ros not importable).",
    ),
    ParamSpec(
        "use_tf",
        bool,
        True,
        "Look up planning_frame <- image frame_id in tf2 at each image stamp when tf2_ros is "
        "importable (frames without a transform are skipped, never posed with the static one).",
        read_only=True,
        part=NODE,
    ),
    ParamSpec(
        "tf_timeout",
        float,
        0.05,
        "Longest wait for the tf2 transform of a frame (s); then the frame is skipped (tf_unavailable).",
        min=0.0,
        max=5.0,
        part=NODE,
    ),
    # --- MoveIt ------------------------------------------------------------------------------
    ParamSpec(
        "moveit_enabled",
        bool,
        True,
        "Keep the MoveIt planning scene in step (when moveit_msgs is importable).",
        read_only=True,
        part=NODE,
    ),
    ParamSpec(
        "moveit_mode",
        str,
        "collision_object",
        "collision_object: moveit_msgs/CollisionObject on /collision_object; planning_scene: "
        "PlanningScene diffs on /planning_scene.",
        choices=("collision_object", "planning_scene"),
        read_only=True,
        part=NODE,
    ),
    ParamSpec(
        "moveit_id_prefix",
        str,
        "sam3d_",
        "Collision object ids are <prefix><track_id>.",
        read_only=True,
        part=NODE,
    ),
    # --- outputs -------------------------------------------------------------------------
    ParamSpec("publish_markers", bool, True, "Publish RViz markers on ~/markers.", part=NODE),
    ParamSpec("marker_alpha", float, 0.8, "Alpha of the mesh markers.", min=0.0, max=1.0, part=NODE),
    ParamSpec(
        "diagnostics_period",
        float,
        1.0,
        "Period of /diagnostics messages (s).",
        min=0.05,
        max=60.0,
        part=NODE,
    ),
    ParamSpec(
        "stats_window",
        int,
        50,
        "Frames over which latencies and rates are averaged.",
        min=1,
        max=10000,
        read_only=True,
        part=NODE,
    ),
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMETERS}
#: The parameters of :class:`PipelineConfig` and of :class:`NodeConfig`, in declaration order.
PIPELINE_PARAMETERS: tuple[ParamSpec, ...] = tuple(p for p in PARAMETERS if p.part == PIPELINE)
NODE_PARAMETERS: tuple[ParamSpec, ...] = tuple(p for p in PARAMETERS if p.part == NODE)


@dataclass(frozen=True)
class PipelineConfig:
    """Frozen values of the parameters the core and the backends read (``part="pipeline"``;
    see :data:`PARAMETERS` for meanings and units). The node's own options are in
    :class:`NodeConfig`."""

    backend: str
    model_dir: str
    ort_threads: int
    blas_threads: int
    ort_use_cuda: bool
    trt_precision: str
    engine_cache_dir: str
    depth_min: float
    depth_max: float
    min_mask_pixels: int
    min_depth_points: int
    max_objects: int
    mask_erosion_px: int
    outlier_std_ratio: float
    plane_distance_threshold: float
    plane_ransac_iterations: int
    mesh_resolution: int
    min_voxel_size: float
    use_symmetry: bool
    max_completion_depth: float
    occupancy_threshold: float
    surface_refinement: bool
    local_support: bool
    output_mesh_max_triangles: int
    collision_shapes: str
    decomposition_method: str
    decomposition_max_parts: int
    decomposition_max_part_vertices: int
    decomposition_time_budget: float
    decomposition_threshold: float
    primitive_max_fit_error: float
    simplified_max_triangles: int
    collision_padding_observed: float
    collision_padding_completed: float
    shape_change_threshold: float
    shape_change_min_distance: float
    track_use_labels: bool
    track_max_distance: float
    track_move_threshold: float
    track_max_missed: int
    fusion_enabled: bool
    planning_frame: str
    camera_to_planning_transform: str

    def replace(self, **changes: Any) -> PipelineConfig:
        """A copy with some values changed (validated).

        Raises:
            ConfigError: for an invalid value, an unknown name or the name of a node
                parameter (change those with :meth:`NodeConfig.replace`).
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return config_from_mapping(values)

    def collision_kinds(self) -> frozenset[str]:
        """The names of ``collision_shapes`` as a set (validated on construction)."""
        return frozenset(parse_collision_shapes(self.collision_shapes))

    def camera_to_planning(self) -> tuple[float, ...]:
        """``camera_to_planning_transform`` as (x, y, z, qx, qy, qz, qw) floats."""
        return parse_pose7(self.camera_to_planning_transform)


@dataclass(frozen=True)
class NodeConfig:
    """Frozen values of the node's and the frame path's parameters (``part="node"``: topics,
    input QoS, synchronisation, the stamp gate, the image size limit, tf2, MoveIt, outputs,
    diagnostics, counters; see :data:`PARAMETERS` for meanings and units), with the
    parameters of the core and the backends in ``pipeline``.

    Attributes:
        pipeline: what the core and the backends read (give them this, never the
            NodeConfig).
    """

    pipeline: PipelineConfig
    rgb_topic: str
    depth_topic: str
    info_topic: str
    mask_topic: str
    input_reliability: str
    sync_slop: float
    sync_queue_size: int
    stamp_jump_threshold: float
    max_stamp_ahead: float
    max_image_pixels: int
    use_tf: bool
    tf_timeout: float
    moveit_enabled: bool
    moveit_mode: str
    moveit_id_prefix: str
    publish_markers: bool
    marker_alpha: float
    diagnostics_period: float
    stats_window: int

    def replace(self, **changes: Any) -> NodeConfig:
        """A copy with some parameters changed, each routed to the config that holds it
        (``node_config.replace(sync_slop=0.1, mesh_resolution=24)`` changes one value here
        and one in ``pipeline``); everything is validated as by
        :func:`node_config_from_mapping`.

        Raises:
            ConfigError: for an unknown name or an invalid value.
        """
        values = self.parameters()
        values.update(changes)
        return node_config_from_mapping(values)

    def parameters(self) -> dict[str, Any]:
        """Every parameter's value by name (both parts), in :data:`PARAMETERS` order."""
        pipeline = self.pipeline
        return {p.name: getattr(self if p.part == NODE else pipeline, p.name) for p in PARAMETERS}


def parse_collision_shapes(value: str) -> tuple[str, ...]:
    """Split and check a ``collision_shapes`` value ("hull,primitive", spaces allowed).

    Raises:
        ConfigError: for an unknown name or an empty list.
    """
    names = tuple(n.strip() for n in value.replace(";", ",").split(",") if n.strip())
    bad = [n for n in names if n not in C.COLLISION_SHAPE_KINDS]
    if bad or not names:
        raise ConfigError(
            f"parameter 'collision_shapes'={value!r}: expected a comma-separated subset of "
            f"{list(C.COLLISION_SHAPE_KINDS)}"
        )
    return names


def parse_pose7(value: str) -> tuple[float, ...]:
    """Parse 'x y z qx qy qz qw' (spaces or commas) into 7 finite floats with a non-zero
    quaternion.

    Raises:
        ConfigError: for a wrong count, non-numbers, non-finite values or a zero quaternion.
    """
    parts = value.replace(",", " ").split()
    try:
        nums = tuple(float(p) for p in parts)
    except ValueError as err:
        raise ConfigError(f"pose {value!r} is not 7 numbers 'x y z qx qy qz qw'") from err
    if len(nums) != 7 or not all(math.isfinite(n) for n in nums):
        raise ConfigError(f"pose {value!r} must be 7 finite numbers 'x y z qx qy qz qw'")
    if math.sqrt(sum(q * q for q in nums[3:])) < 1e-9:
        raise ConfigError(f"pose {value!r} has a zero quaternion")
    return nums


def validate_value(spec: ParamSpec, value: Any) -> Any:
    """Coerce and check one value against its spec; raises ConfigError."""
    if spec.type is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"parameter {spec.name!r} must be a bool, got {value!r}")
        return value
    if spec.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"parameter {spec.name!r} must be an integer, got {value!r}")
    elif spec.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"parameter {spec.name!r} must be a number, got {value!r}")
        value = float(value)
    elif spec.type is str:
        if not isinstance(value, str):
            raise ConfigError(f"parameter {spec.name!r} must be a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"parameter {spec.name!r} must be one of {spec.choices}, got {value!r}")
        return value
    if spec.min is not None and value < spec.min:
        raise ConfigError(f"parameter {spec.name!r}={value!r} is below its minimum {spec.min}")
    if spec.max is not None and value > spec.max:
        raise ConfigError(f"parameter {spec.name!r}={value!r} is above its maximum {spec.max}")
    return value


def _check_names(values: Mapping[str, Any], part: ConfigPart | None) -> None:
    """Raise ConfigError for names that are no parameter, or (``part`` given) parameters
    of the other config."""
    unknown = sorted(set(values) - set(PARAMETERS_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown parameters {unknown}; valid: {sorted(PARAMETERS_BY_NAME)}")
    if part == PIPELINE:
        other = sorted(n for n in values if PARAMETERS_BY_NAME[n].part != PIPELINE)
        if other:
            raise ConfigError(
                f"parameters {other} are node parameters, not in PipelineConfig: change them "
                "in the NodeConfig (NodeConfig.replace, node_config_from_mapping)"
            )


def config_from_mapping(values: Mapping[str, Any], *, strict: bool = True) -> PipelineConfig:
    """Build the core's PipelineConfig from defaults overridden by ``values``.

    Args:
        values: parameter name -> value (parameters of the pipeline part).
        strict: raise ConfigError on unknown names and on node parameters (else ignore
            them).
    """
    if strict:
        _check_names(values, PIPELINE)
    merged = {p.name: validate_value(p, values.get(p.name, p.default)) for p in PIPELINE_PARAMETERS}
    if merged["depth_min"] >= merged["depth_max"]:
        raise ConfigError(f"depth_min={merged['depth_min']} must be < depth_max={merged['depth_max']}")
    parse_collision_shapes(merged["collision_shapes"])
    try:
        parse_pose7(merged["camera_to_planning_transform"])
    except ConfigError as err:
        raise ConfigError(f"parameter 'camera_to_planning_transform': {err}") from err
    return PipelineConfig(**merged)


def node_config_from_mapping(values: Mapping[str, Any], *, strict: bool = True) -> NodeConfig:
    """Build a NodeConfig (and its PipelineConfig) from defaults overridden by ``values``;
    each name goes to the config that holds it (:attr:`ParamSpec.part`).

    Args:
        values: parameter name -> value (any parameter of :data:`PARAMETERS`).
        strict: raise ConfigError on unknown names (else ignore them).
    """
    if strict:
        _check_names(values, None)
    pipeline = config_from_mapping(
        {
            k: v
            for k, v in values.items()
            if k in PARAMETERS_BY_NAME and PARAMETERS_BY_NAME[k].part == PIPELINE
        }
    )
    node = {p.name: validate_value(p, values.get(p.name, p.default)) for p in NODE_PARAMETERS}
    return NodeConfig(pipeline=pipeline, **node)


def default_config() -> PipelineConfig:
    """The core's defaults of :data:`PARAMETERS` (the pipeline part)."""
    return config_from_mapping({})


def default_node_config() -> NodeConfig:
    """The defaults of every parameter in :data:`PARAMETERS` (both parts)."""
    return node_config_from_mapping({})


def load_params_file(path: str | Path, node_name: str = "sam3d_node") -> dict[str, Any]:
    """Read the ``ros__parameters`` of ``node_name`` (or of ``/**``) from a ROS params YAML."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read params file {str(path)!r}: {err}") from err
    for key in (node_name, f"/{node_name}", "/**"):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return dict(section["ros__parameters"])
    raise ConfigError(f"params file {str(path)!r} has no '{node_name}: ros__parameters:' section")


def config_from_params_file(path: str | Path, **overrides: Any) -> NodeConfig:
    """The node's frozen config (both parts; ``.pipeline`` for the core) from a ROS params
    YAML plus overrides of any parameter (None values are ignored)."""
    values = load_params_file(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return node_config_from_mapping(values)

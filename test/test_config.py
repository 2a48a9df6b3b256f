"""Parameters: the declarations, config/default.yaml and the two frozen configs (the core's
PipelineConfig, the node's NodeConfig) agree."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from sam3d_ros.core.config import (
    NODE,
    PARAMETERS,
    PIPELINE,
    ConfigError,
    NodeConfig,
    PipelineConfig,
    config_from_mapping,
    config_from_params_file,
    default_config,
    default_node_config,
    load_params_file,
    node_config_from_mapping,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sam3d_ros"
#: The parameters only the node and its frame path read (issue #11: out of PipelineConfig).
NODE_FIELDS = (
    "rgb_topic",
    "depth_topic",
    "info_topic",
    "mask_topic",
    "input_reliability",
    "sync_slop",
    "sync_queue_size",
    "stamp_jump_threshold",
    "max_stamp_ahead",
    "max_image_pixels",
    "use_tf",
    "tf_timeout",
    "moveit_enabled",
    "moveit_mode",
    "moveit_id_prefix",
    "publish_markers",
    "marker_alpha",
    "diagnostics_period",
    "stats_window",
)


def test_yaml_matches_declarations() -> None:
    values = load_params_file(ROOT / "config" / "default.yaml")
    assert set(values) == {p.name for p in PARAMETERS}
    for spec in PARAMETERS:
        assert values[spec.name] == spec.default, spec.name
    loaded = config_from_params_file(ROOT / "config" / "default.yaml")
    assert loaded == default_node_config() and loaded.pipeline == default_config()


def test_dataclass_fields_match_declarations() -> None:
    """Every spec lands in exactly one of the two configs, as a field of its type, in
    declaration order; the node's config holds the pipeline's besides."""
    pipeline = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    node = {f.name: f for f in dataclasses.fields(NodeConfig) if f.name != "pipeline"}
    assert dataclasses.fields(NodeConfig)[0].name == "pipeline"
    assert not set(pipeline) & set(node)
    assert list(pipeline) == [p.name for p in PARAMETERS if p.part == PIPELINE]
    assert list(node) == [p.name for p in PARAMETERS if p.part == NODE]
    assert set(pipeline) | set(node) == {p.name for p in PARAMETERS}
    for spec in PARAMETERS:
        assert spec.part in (PIPELINE, NODE), spec.name
        field = (pipeline if spec.part == PIPELINE else node)[spec.name]
        assert field.type == spec.type.__name__, spec.name


def test_pipeline_config_has_none_of_the_node_fields() -> None:
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    assert not names & set(NODE_FIELDS)
    assert {p.name for p in PARAMETERS if p.part == NODE} == set(NODE_FIELDS)
    # the backend options and what the pipeline reads of the planning frame stay
    assert {"backend", "planning_frame", "camera_to_planning_transform", "collision_shapes"} <= names


def test_core_and_backends_never_read_a_node_field() -> None:
    """No attribute access named like a node parameter in sam3d_ros/core or /backends."""
    found = []
    for path in sorted([*(PACKAGE / "core").rglob("*.py"), *(PACKAGE / "backends").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in NODE_FIELDS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert found == []


def test_node_config_replace_routes_each_name_to_its_part() -> None:
    cfg = default_node_config()
    new = cfg.replace(sync_slop=0.1, mesh_resolution=24)
    assert new.sync_slop == 0.1 and new.pipeline.mesh_resolution == 24
    assert new.replace() == new and cfg.replace() == cfg
    assert new.pipeline == cfg.pipeline.replace(mesh_resolution=24)
    assert dataclasses.replace(new, sync_slop=cfg.sync_slop, pipeline=cfg.pipeline) == cfg
    # validated like PipelineConfig.replace, on either part
    with pytest.raises(ConfigError, match="sync_slop"):
        cfg.replace(sync_slop=-1.0)
    with pytest.raises(ConfigError, match="mesh_resolution"):
        cfg.replace(mesh_resolution=1)
    with pytest.raises(ConfigError, match="depth_min"):
        cfg.replace(depth_min=2.0, depth_max=1.0)
    with pytest.raises(ConfigError, match="unknown"):
        cfg.replace(sync_slpo=0.1)
    # a node parameter is no part of the core's config
    with pytest.raises(ConfigError, match="node parameters"):
        cfg.pipeline.replace(sync_slop=0.1)
    with pytest.raises(ConfigError, match="marker_alpha"):
        config_from_mapping({"marker_alpha": 0.5})
    assert config_from_mapping({"marker_alpha": 0.5}, strict=False) == default_config()
    assert set(cfg.parameters()) == {p.name for p in PARAMETERS}
    assert new.parameters()["mesh_resolution"] == 24 and new.parameters()["sync_slop"] == 0.1


def test_params_file_loads_into_both_parts(tmp_path: Path) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(
        "sam3d_node:\n"
        "  ros__parameters:\n"
        "    rgb_topic: /cam/rgb\n"
        "    sync_slop: 0.02\n"
        "    marker_alpha: 0.5\n"
        "    mesh_resolution: 24\n"
        "    planning_frame: world\n"
    )
    cfg = config_from_params_file(path, backend="geometric", tf_timeout=None)
    assert isinstance(cfg, NodeConfig) and isinstance(cfg.pipeline, PipelineConfig)
    assert (cfg.rgb_topic, cfg.sync_slop, cfg.marker_alpha) == ("/cam/rgb", 0.02, 0.5)
    assert (cfg.pipeline.mesh_resolution, cfg.pipeline.planning_frame) == (24, "world")
    assert cfg.pipeline.backend == "geometric" and cfg.tf_timeout == default_node_config().tf_timeout
    assert cfg == node_config_from_mapping(
        {
            "rgb_topic": "/cam/rgb",
            "sync_slop": 0.02,
            "marker_alpha": 0.5,
            "mesh_resolution": 24,
            "planning_frame": "world",
            "backend": "geometric",
        }
    )


def test_config_is_frozen() -> None:
    cfg = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mesh_resolution = 24  # type: ignore[misc]
    node_cfg = default_node_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        node_cfg.sync_slop = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sync_slop", -0.1),
        ("mesh_resolution", 4),
        ("max_objects", 0),
        ("use_symmetry", "yes"),
        ("depth_max", "far"),
    ],
)
def test_out_of_range_or_wrong_type(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        node_config_from_mapping({name: value})


def test_unknown_parameter_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="mesh_resolution"):
        config_from_mapping({"mesh_resolutoin": 32})
    with pytest.raises(ConfigError, match="sync_slop"):
        node_config_from_mapping({"sync_slpo": 0.1})


def test_depth_range_order() -> None:
    with pytest.raises(ConfigError, match="depth_min"):
        config_from_mapping({"depth_min": 2.0, "depth_max": 1.0})


def test_replace_validates() -> None:
    cfg = default_config().replace(mesh_resolution=32)
    assert cfg.mesh_resolution == 32
    with pytest.raises(ConfigError):
        cfg.replace(mesh_resolution=1)


def test_int_accepted_for_float() -> None:
    assert node_config_from_mapping({"sync_slop": 1}).sync_slop == 1.0
    assert config_from_mapping({"depth_max": 3}).depth_max == 3.0

"""Parameters: the declarations, config/default.yaml and the frozen config agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sam3d_ros.core.config import (
    PARAMETERS,
    ConfigError,
    PipelineConfig,
    config_from_mapping,
    config_from_params_file,
    default_config,
    load_params_file,
)

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_matches_declarations() -> None:
    values = load_params_file(ROOT / "config" / "default.yaml")
    assert set(values) == {p.name for p in PARAMETERS}
    for spec in PARAMETERS:
        assert values[spec.name] == spec.default, spec.name
    assert config_from_params_file(ROOT / "config" / "default.yaml") == default_config()


def test_dataclass_fields_match_declarations() -> None:
    assert [f.name for f in dataclasses.fields(PipelineConfig)] == [p.name for p in PARAMETERS]


def test_config_is_frozen() -> None:
    cfg = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sync_slop = 1.0  # type: ignore[misc]


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
        config_from_mapping({name: value})


def test_unknown_parameter_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="mesh_resolution"):
        config_from_mapping({"mesh_resolutoin": 32})


def test_depth_range_order() -> None:
    with pytest.raises(ConfigError, match="depth_min"):
        config_from_mapping({"depth_min": 2.0, "depth_max": 1.0})


def test_replace_validates() -> None:
    cfg = default_config().replace(mesh_resolution=32)
    assert cfg.mesh_resolution == 32
    with pytest.raises(ConfigError):
        cfg.replace(mesh_resolution=1)


def test_int_accepted_for_float() -> None:
    assert config_from_mapping({"sync_slop": 1}).sync_slop == 1.0

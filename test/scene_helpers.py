"""Small hand-made tabletop scenes for the tracking, collision and MoveIt tests: objects
that appear, move and vanish in front of a fixed camera."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sam3d_ros.core.config import PipelineConfig, default_config
from sam3d_ros.core.frames import make_transform
from sam3d_ros.core.types import RGBDFrame
from sam3d_ros.sim.raycast import (
    Box,
    Camera,
    Cylinder,
    RenderedFrame,
    Scene,
    SceneObject,
    Table,
    look_at,
    render,
)
from sam3d_ros.sim.scenes import d435_intrinsics

#: Stamps of the test frames: 10 Hz.
T0 = 1_700_000_000_000_000_000
DT = 100_000_000


def camera(width: int = 320, height: int = 240) -> Camera:
    """A camera 0.7 m from the table centre, looking down at about 45 degrees."""
    return look_at((0.0, -0.5, 0.5), (0.0, 0.0, 0.04), intrinsics=d435_intrinsics(width, height))


def box(label: int, x: float, y: float, size: tuple[float, float, float] = (0.08, 0.06, 0.1)) -> SceneObject:
    return SceneObject(label, Box(size, make_transform(np.eye(3), (x, y, size[2] / 2))), (200, 60, 60))


def cylinder(label: int, x: float, y: float, radius: float = 0.035, height: float = 0.12) -> SceneObject:
    return SceneObject(
        label, Cylinder(radius, height, make_transform(np.eye(3), (x, y, height / 2))), (60, 160, 60)
    )


def rendered(objects: list[SceneObject], cam: Camera | None = None) -> RenderedFrame:
    """Noise-free render of the objects on a table."""
    return render(Scene(objects=tuple(objects), table=Table((0.0, 0.0), (0.5, 0.4))), cam or camera())


def frame(objects: list[SceneObject], index: int, cam: Camera | None = None) -> RGBDFrame:
    """Noise-free frame ``index`` (stamp T0 + index * DT) of the objects."""
    return replace(rendered(objects, cam).to_rgbd_frame(), stamp_ns=T0 + index * DT)


def relabel(f: RGBDFrame, mapping: dict[int, int]) -> RGBDFrame:
    """The frame with its mask labels renamed (an upstream segmenter that renumbers)."""
    labels = f.labels.copy()
    for old, new in mapping.items():
        labels[f.labels == old] = new
    return replace(f, labels=labels, scores={mapping.get(k, k): v for k, v in f.scores.items()})


def config(**changes: object) -> PipelineConfig:
    """Defaults plus changes, coarse enough for fast tests."""
    base = {"mesh_resolution": 32}
    base.update(changes)
    return default_config().replace(**base)

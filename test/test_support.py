"""Local support: what an object rests on, from the depth where its mask meets its
neighbours, and the cut of a stacked object's shape below its support's top."""

from __future__ import annotations

import numpy as np
import pytest
from scene_helpers import camera

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.config import default_config
from sam3d_ros.core.frames import make_transform, transform_points
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.support import ON_PLANE, UNKNOWN, Support, cut_below, find_supports
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import SupportPlane, VoxelShape
from sam3d_ros.sim.raycast import Box, Cylinder, Scene, SceneObject, Table, render

CFG = default_config().replace(backend="geometric")
WIDE = (0.22, 0.16, 0.05)  # a wide box laid flat: the base of a stack


def _box(label: int, size: tuple[float, float, float], x: float, y: float, z0: float) -> SceneObject:
    return SceneObject(label, Box(size, make_transform(np.eye(3), (x, y, z0 + size[2] / 2))), (180, 70, 70))


def _supports(objects: list[SceneObject]) -> dict[int, Support]:
    frame = render(
        Scene(objects=tuple(objects), table=Table((0.0, 0.0), (0.5, 0.4))), camera()
    ).to_rgbd_frame()
    plane = estimate_support_plane(frame, CFG)
    obs, _ = extract_observations(frame, CFG)
    return find_supports(frame, plane, obs)


def test_an_object_on_the_table_rests_on_the_plane() -> None:
    sup = _supports([_box(1, (0.06, 0.06, 0.08), 0.0, 0.02, 0.0)])
    assert sup[1].instance_id == ON_PLANE and sup[1].height == 0.0


def test_a_box_on_a_wide_box_rests_on_it_at_its_top() -> None:
    sup = _supports([_box(1, WIDE, 0.0, 0.02, 0.0), _box(2, (0.05, 0.05, 0.07), 0.0, 0.03, WIDE[2])])
    assert sup[1].instance_id == ON_PLANE
    assert sup[2].instance_id == 1 and sup[2].contacts >= 6
    assert sup[2].height == pytest.approx(WIDE[2], abs=0.006)


def test_an_object_hidden_behind_another_is_not_on_it() -> None:
    """A tall box in front hides the bottom of a box behind it: they touch in the image,
    and the front one's top edge lies near the hidden one's lowest visible points, but it
    does not extend under it: the support is not the front box."""
    front = SceneObject(
        1, Cylinder(0.04, 0.07, make_transform(np.eye(3), (0.0, -0.03, 0.035))), (60, 160, 60)
    )
    back = _box(2, (0.07, 0.05, 0.14), 0.0, 0.05, 0.0)
    sup = _supports([front, back])
    assert sup[2].instance_id in (ON_PLANE, UNKNOWN)


def test_without_a_plane_every_support_is_unknown() -> None:
    frame = render(
        Scene(objects=(_box(1, WIDE, 0.0, 0.0, 0.0),), table=Table((0.0, 0.0), (0.5, 0.4))), camera()
    )
    f = frame.to_rgbd_frame()
    obs, _ = extract_observations(f, CFG)
    assert {s.instance_id for s in find_supports(f, None, obs).values()} == {UNKNOWN}


def _tall_shape() -> VoxelShape:
    """A 10x10x20 block of voxels of 1 cm from height 0 to 0.2 m over the plane z = 0 (the
    grid frame is the plane's frame, camera at its origin)."""
    return VoxelShape(
        occupancy=np.ones((10, 10, 20), dtype=np.float32),
        voxel_size=0.01,
        origin=np.zeros(3),
        camera_T_grid=np.eye(4),
        confidence=1.0,
    )


def test_cut_below_empties_exactly_the_voxels_under_the_height() -> None:
    plane = SupportPlane(normal=np.array([0.0, 0.0, 1.0]), offset=0.0)
    cut = cut_below(_tall_shape(), plane, 0.05)
    assert cut is not None
    heights = (np.arange(20) + 0.5) * 0.01
    kept = cut.occupancy.any(axis=(0, 1))
    np.testing.assert_array_equal(kept, heights >= 0.05)
    assert cut_below(_tall_shape(), plane, -1.0) is not None  # nothing below: unchanged
    assert cut_below(_tall_shape(), plane, 0.5) is None  # nothing would stay


def test_the_pipeline_cuts_a_stacked_object_at_its_support_and_says_so() -> None:
    scene = Scene(
        objects=(_box(1, WIDE, 0.0, 0.02, 0.0), _box(2, (0.05, 0.05, 0.07), 0.0, 0.03, WIDE[2])),
        table=Table((0.0, 0.0), (0.5, 0.4)),
    )
    frame = render(scene, camera()).to_rgbd_frame()
    lowest: dict[tuple[bool, int], float] = {}
    ids: dict[tuple[bool, int], int] = {}
    for on in (False, True):
        cfg = CFG.replace(local_support=on)
        pipe = FramePipeline(cfg, create_backend(cfg))
        result = pipe.process(frame)
        pipe.close()
        assert result.plane is not None
        for o in result.objects:
            verts = transform_points(o.pose.matrix(), o.mesh.vertices)
            lowest[(on, o.instance_id)] = float(result.plane.signed_distance(verts).min())
            ids[(on, o.instance_id)] = o.support_id
    assert ids[(True, 1)] == ON_PLANE and ids[(True, 2)] == 1 and ids[(False, 2)] == UNKNOWN
    # completed down to the table without the support; to about the wide box's top with it
    assert lowest[(False, 2)] < WIDE[2] - 0.02
    assert lowest[(True, 2)] == pytest.approx(WIDE[2], abs=0.012)


def test_the_geometric_completion_extrudes_a_stacked_object_down_to_its_support_only() -> None:
    """The box on the wide box, completed by the geometric backend with and without its
    contact height in the scene: without it the columns are filled down to the table (the
    grid starts at the plane); with it the grid starts at the support's top (less
    SUPPORT_CUT_TOL), nothing is filled below it, and the shorter grid has finer voxels."""
    from sam3d_ros.core.completion import complete_shape
    from sam3d_ros.core.support import contact_heights
    from sam3d_ros.core.types import SceneContext

    objects = [_box(1, WIDE, 0.0, 0.02, 0.0), _box(2, (0.05, 0.05, 0.07), 0.0, 0.03, WIDE[2])]
    frame = render(
        Scene(objects=tuple(objects), table=Table((0.0, 0.0), (0.5, 0.4))), camera()
    ).to_rgbd_frame()
    plane = estimate_support_plane(frame, CFG)
    assert plane is not None
    obs, _ = extract_observations(frame, CFG)
    heights = contact_heights(find_supports(frame, plane, obs))
    assert heights[2] == pytest.approx(WIDE[2], abs=0.006)
    top = next(o for o in obs if o.instance_id == 2)
    low, voxel = {}, {}
    for grounded in (False, True):
        scene = SceneContext(frame=frame, plane=plane, support_heights=heights if grounded else {})
        shape = complete_shape(scene, top, CFG)
        occupied = np.argwhere(shape.occupancy > CFG.occupancy_threshold)
        centres = shape.origin + (occupied + 0.5) * shape.voxel_size
        low[grounded] = float(plane.signed_distance(transform_points(shape.camera_T_grid, centres)).min())
        voxel[grounded] = shape.voxel_size
    assert low[False] < WIDE[2] - 0.02
    assert low[True] == pytest.approx(WIDE[2], abs=0.006 + voxel[True])
    assert voxel[True] < voxel[False]

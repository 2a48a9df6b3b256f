"""Mesh files are read through trimesh: any PLY encoding and vertex properties (what the
hand-made reader could not), and unreadable files give the area's error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from sam3d_ros.cli import _print_replay_summary
from sam3d_ros.tools.eval import EvalError, ResultsMethod, read_mesh


def _decorated_mesh() -> trimesh.Trimesh:
    """A box with per-vertex normals and colours (extra vertex properties in the PLY)."""
    m = trimesh.creation.box((0.1, 0.2, 0.3))
    m.visual.vertex_colors = np.tile(np.array([[10, 20, 30, 255]], dtype=np.uint8), (len(m.vertices), 1))
    return m


def _header(path: Path) -> str:
    data = path.read_bytes()
    return data[: data.index(b"end_header")].decode("ascii")


def test_binary_ply_with_extra_vertex_properties_is_read_exactly(tmp_path: Path) -> None:
    src = _decorated_mesh()
    path = tmp_path / "decorated.ply"
    src.export(path, encoding="binary", vertex_normal=True)
    header = _header(path)
    assert "format binary_little_endian 1.0" in header
    assert "property float x" in header  # trimesh writes float32 vertices
    assert "property float nx" in header and "property uchar red" in header  # not just x y z
    mesh = read_mesh(path)
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int32
    np.testing.assert_array_equal(mesh.vertices, np.asarray(src.vertices, dtype=np.float32))
    np.testing.assert_array_equal(mesh.faces, src.faces)


def test_cli_replay_summary_counts_the_vertices_of_such_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _decorated_mesh()
    (tmp_path / "meshes").mkdir()
    src.export(tmp_path / "meshes" / "1_1.ply", encoding="binary", vertex_normal=True)
    record = {
        "stamp_ns": 1,
        "timings_ms": {"total": 12.5},
        "objects": [
            {
                "track_id": 1,
                "pose": {"position": [0.0, 0.1, 0.6]},
                "extents": [0.1, 0.2, 0.3],
                "mesh": "meshes/1_1.ply",
                "confidence": 0.9,
            }
        ],
    }
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n")
    _print_replay_summary(tmp_path)
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:2] == ["1", "1"] and int(row[8]) == len(src.vertices)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read mesh"),
        (b"not a mesh at all\n", "cannot read mesh"),
        (
            b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
            b"end_header\n0 0 0\n1 0 0\n0 1 0\n",
            "has no triangles",
        ),
        (
            b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
            b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
            "face indices 0..7 outside its 3 vertices",
        ),
    ],
)
def test_unreadable_mesh_files_raise_eval_error(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "bad.ply"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EvalError, match=match):
        read_mesh(path)


def test_results_with_an_unreadable_mesh_name_the_record(tmp_path: Path) -> None:
    (tmp_path / "broken.ply").write_bytes(b"garbage")
    obj = {
        "instance_id": 1,
        "pose": {"position": [0, 0, 0], "orientation_xyzw": [0, 0, 0, 1]},
        "mesh": "broken.ply",
    }
    (tmp_path / "results.jsonl").write_text(json.dumps({"stamp_ns": 5, "objects": [obj]}) + "\n")
    with pytest.raises(EvalError, match=r"results\.jsonl:1: bad record: .*cannot read mesh"):
        ResultsMethod(tmp_path / "results.jsonl")

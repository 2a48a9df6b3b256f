"""Minimal binary PLY writer/reader for triangle meshes (little-endian, float32 vertices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam3d_ros.core.types import TriangleMesh


class PlyError(ValueError):
    """Raised for files that are not the PLY subset written by :func:`write_ply`."""


def write_ply(path: Path, mesh: TriangleMesh) -> None:
    """Write ``mesh`` (vertices in metres) as binary little-endian PLY."""
    v = np.ascontiguousarray(mesh.vertices, dtype="<f4")
    f = np.ascontiguousarray(mesh.faces, dtype="<i4")
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment sam3d_ros mesh, metres\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    faces = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    faces["n"] = 3
    faces["idx"] = f
    path.write_bytes(header + v.tobytes() + faces.tobytes())


def read_ply(path: Path) -> TriangleMesh:
    """Read a mesh written by :func:`write_ply`."""
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise PlyError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    counts = {ln.split()[1]: int(ln.split()[2]) for ln in header if ln.startswith("element")}
    body = data[end + len(b"end_header\n") :]
    try:
        nv, nf = counts["vertex"], counts["face"]
        verts = np.frombuffer(body, dtype="<f4", count=nv * 3).reshape(nv, 3)
        faces = np.frombuffer(body, dtype=[("n", "u1"), ("idx", "<i4", (3,))], count=nf, offset=nv * 12)
    except (KeyError, ValueError) as err:
        raise PlyError(f"{path}: unsupported PLY layout ({err})") from err
    return TriangleMesh(vertices=verts.astype(np.float64), faces=faces["idx"].astype(np.int32))

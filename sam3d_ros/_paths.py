"""Locations of the package's data files (params, models), for source and installed layouts."""

from __future__ import annotations

from pathlib import Path

_PKG_DIR = Path(__file__).resolve().parent


def share_dir() -> Path:
    """Directory holding ``config/``, ``models/`` and ``launch/``.

    In the source tree that is the repository root; in a colcon install it is
    ``share/sam3d_ros`` (found through ament_index when available).
    """
    source_root = _PKG_DIR.parent
    if (source_root / "config" / "default.yaml").is_file():
        return source_root
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("sam3d_ros"))
    except Exception:  # noqa: BLE001 - ament_index missing or package not indexed
        return source_root


def default_params_file() -> Path:
    """The bundled ``config/default.yaml``."""
    return share_dir() / "config" / "default.yaml"

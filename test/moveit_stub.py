"""Build and load the test-only moveit_msgs stand-in (test/moveit_msgs_stub/).

:func:`build_stub` runs colcon the way scripts/setup.sh builds our messages (the venv as
AMENT_PREFIX_PATH, a staging directory of symlinks because the venv lives inside the
repository) into ``build/moveit_msgs_stub/`` and skips the build when the sources did not
change. :func:`activate_stub` makes the generated Python packages importable in this
process (sys.path, LD_LIBRARY_PATH for the rmw's type-support lookup, and the shared
libraries preloaded so the Python extensions resolve them without a restart).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB_SRC = ROOT / "test" / "moveit_msgs_stub"
BUILD = ROOT / "build" / "moveit_msgs_stub"
PACKAGES = ("object_recognition_msgs", "octomap_msgs", "trajectory_msgs", "moveit_msgs")


class StubUnavailableError(RuntimeError):
    """The build tools are missing (the caller skips)."""


def _source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(STUB_SRC.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(STUB_SRC)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_stub(timeout_s: float = 900.0) -> Path:
    """Build the stand-in packages (cached) and return the install prefix.

    Raises:
        StubUnavailableError: colcon, cmake or a C++ compiler is missing.
        RuntimeError: the build failed (the log tail is in the message).
    """
    venv = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv"))
    colcon = venv / "bin" / "colcon"
    missing = [t for t in ("cmake", "c++") if shutil.which(t) is None]
    if not colcon.exists():
        missing.append(str(colcon))
    if missing:
        raise StubUnavailableError(f"build tools not found: {missing}")
    install = BUILD / "install"
    stamp = BUILD / f".stamp-{_source_hash()}"
    if stamp.exists() and all((install / p).is_dir() for p in PACKAGES):
        return install
    stage = BUILD / "src"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for pkg in PACKAGES:
        (stage / pkg).symlink_to(STUB_SRC / pkg)
    env = dict(os.environ)
    env.update(
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
        AMENT_PREFIX_PATH=str(venv),
        CMAKE_PREFIX_PATH="",
        COLCON_LOG_PATH=str(BUILD / "log"),
    )
    cmd = [
        str(colcon),
        "build",
        "--paths",
        *[str(stage / p) for p in PACKAGES],
        "--build-base",
        str(BUILD / "build"),
        "--install-base",
        str(install),
        "--merge-install",
        "--event-handlers",
        "console_direct-",
        "--cmake-args",
        "-DBUILD_TESTING=OFF",
        f"-DPython3_EXECUTABLE={venv / 'bin' / 'python'}",
    ]
    log = BUILD / "colcon-build.txt"
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=BUILD, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"colcon build of the moveit_msgs stand-in failed ({log}):\n{tail}")
    for old in BUILD.glob(".stamp-*"):
        old.unlink()
    stamp.touch()
    return install


def activate_stub(install: Path) -> None:
    """Make the built packages importable in this process (idempotent)."""
    lib = install / "lib"
    site = lib / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    ld = os.environ.get("LD_LIBRARY_PATH", "")
    if str(lib) not in ld.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{lib}:{ld}" if ld else str(lib)
    # preload in dependency order (retry until nothing more loads)
    pending = sorted(lib.glob("lib*.so"))
    while pending:
        left = []
        for so in pending:
            try:
                ctypes.CDLL(str(so), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                left.append(so)
        if len(left) == len(pending):
            break
        pending = left

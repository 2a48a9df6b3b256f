"""Which PyPI wheels the GPU check installs for a driver (standard library only).

``scripts/gpu_check.sh`` runs this with the system ``python3`` before any third-party
package exists, so it imports nothing outside the standard library. It reads the CUDA
version the driver supports from ``nvidia-smi`` (the "CUDA Version: X.Y" of its header:
the newest CUDA runtime the driver can run; no CUDA toolkit needed) and picks, for that
CUDA major version, wheels that all use the same CUDA major:

======  ==========================  =======================  ===================================
CUDA    TensorRT                    CUDA bindings            ONNX Runtime (CUDA provider)
======  ==========================  =======================  ===================================
12.x    ``tensorrt-cu12`` 10.x      ``cuda-bindings`` 12.x   ``onnxruntime-gpu`` 1.21-1.26 (CUDA 12)
13.x    ``tensorrt-cu13`` 10.x      ``cuda-bindings`` 13.x   ``onnxruntime-gpu`` >= 1.27 (CUDA 13)
======  ==========================  =======================  ===================================

* TensorRT stays below 11: TensorRT 11 removed the weakly typed precision flags
  (``BuilderFlag.FP16``) that :mod:`sam3d_ros.backends.tensorrt_backend` builds fp16
  engines with; ``tensorrt-cu13`` exists from 10.13 on.
* ``cuda-bindings`` (>= 12.6; what the ``cuda-python`` metapackage installs) provides
  ``cuda.bindings.runtime``, the module the backend imports; GPU images often have it.
* ONNX Runtime's PyPI wheels moved from CUDA 12 to CUDA 13 with 1.27; the ``cuda`` and
  ``cudnn`` extras bring the CUDA/cuDNN libraries as NVIDIA wheels (loaded with
  ``onnxruntime.preload_dlls()``), so no toolkit is needed.
* A driver below CUDA 12 is refused (no TensorRT 10 / ONNX Runtime wheel on PyPI fits it
  with cuDNN 9), with a message naming the version and the supported ones.

The rest of the GPU venv is ``requirements/runtime.txt`` without the CPU ``onnxruntime``
(both wheels install the same ``onnxruntime`` module and shadow each other), without the
collision and scene-generator packages the check never imports (``coacd``, ``vhacdx``,
``pybullet``: pybullet may compile from source for minutes), plus pytest.

Usage::

    nvidia-smi | python3 -m sam3d_ros.tools.gpu_setup cuda-version       # prints e.g. 12.4
    python3 -m sam3d_ros.tools.gpu_setup requirements --cuda-version 12.4 \\
        --runtime requirements/runtime.txt                                 # one per line
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

#: CUDA major versions that have matching TensorRT, cuda-bindings and onnxruntime-gpu wheels.
SUPPORTED_CUDA_MAJORS: Final[tuple[int, ...]] = (12, 13)
#: CUDA major -> the GPU wheels (pip requirement strings).
GPU_WHEELS: Final[dict[int, tuple[str, ...]]] = {
    12: ("tensorrt-cu12>=10.3,<11", "cuda-bindings>=12.6,<13", "onnxruntime-gpu[cuda,cudnn]>=1.21,<1.27"),
    13: ("tensorrt-cu13>=10.13,<11", "cuda-bindings>=13.0,<14", "onnxruntime-gpu[cuda,cudnn]>=1.27"),
}
#: Packages of requirements/runtime.txt the GPU venv leaves out (see the module docstring).
EXCLUDED_RUNTIME: Final[frozenset[str]] = frozenset({"onnxruntime", "coacd", "vhacdx", "pybullet"})
#: Test runner of the check's ``pytest -m gpu`` step.
TEST_REQUIREMENTS: Final[tuple[str, ...]] = ("pytest>=8.0", "pytest-timeout>=2.3")

_SMI_CUDA = re.compile(r"CUDA\s+Version\s*:\s*(\d+)\.(\d+)")
_SMI_DRIVER = re.compile(r"Driver\s+Version\s*:\s*([0-9.]+)")
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:\.\d+)*\s*$")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class GpuCheckError(RuntimeError):
    """Raised by the GPU check for unusable input: an unparsable or unsupported CUDA
    version, a missing requirements file, a step that cannot run."""


@dataclass(frozen=True)
class DriverInfo:
    """What ``nvidia-smi`` says about the driver.

    Attributes:
        driver_version: e.g. "550.54.15" ("" when not printed).
        cuda_version: newest CUDA runtime the driver supports, e.g. "12.4".
    """

    driver_version: str
    cuda_version: str


@dataclass(frozen=True)
class WheelPlan:
    """The GPU wheels for one CUDA version.

    Attributes:
        cuda_version: the driver's CUDA version, "major.minor".
        cuda_major: its major version (a key of :data:`GPU_WHEELS`).
        requirements: pip requirement strings of the GPU wheels.
    """

    cuda_version: str
    cuda_major: int
    requirements: tuple[str, ...]


def parse_cuda_version(text: str) -> tuple[int, int]:
    """(major, minor) of a version string such as "12.4" or "13.0.1".

    Raises:
        GpuCheckError: ``text`` is not a dotted version.
    """
    m = _VERSION.match(text)
    if m is None:
        raise GpuCheckError(f"cannot read a CUDA version from {text!r}; expected e.g. '12.4'")
    return int(m.group(1)), int(m.group(2))


def parse_nvidia_smi(output: str) -> DriverInfo:
    """The driver and CUDA version from the header of plain ``nvidia-smi`` output.

    Raises:
        GpuCheckError: no "CUDA Version: X.Y" in the output (no driver, or a driver too old
            to print it), quoting the start of the output.
    """
    m = _SMI_CUDA.search(output)
    if m is None:
        head = " ".join(output.split())[:200]
        raise GpuCheckError(f"nvidia-smi printed no 'CUDA Version: X.Y' (no NVIDIA driver?): {head!r}")
    d = _SMI_DRIVER.search(output)
    return DriverInfo(driver_version=d.group(1) if d else "", cuda_version=f"{m.group(1)}.{m.group(2)}")


def select_wheels(cuda_version: str) -> WheelPlan:
    """The GPU wheels that fit a driver supporting CUDA ``cuda_version`` (see the table of
    the module docstring).

    Raises:
        GpuCheckError: unparsable version, or a CUDA major without wheels (e.g. "11.8"),
            naming the supported majors.
    """
    major, minor = parse_cuda_version(cuda_version)
    if major not in GPU_WHEELS:
        raise GpuCheckError(
            f"CUDA {major}.{minor} (from the driver) is not supported: TensorRT, cuda-bindings and "
            f"onnxruntime-gpu wheels on PyPI exist for CUDA {', '.join(map(str, SUPPORTED_CUDA_MAJORS))}.x; "
            "update the NVIDIA driver"
        )
    return WheelPlan(cuda_version=f"{major}.{minor}", cuda_major=major, requirements=GPU_WHEELS[major])


def requirement_name(line: str) -> str:
    """The normalised project name of one requirements line ("" for comments/blank lines)."""
    text = line.split("#", 1)[0].strip()
    m = _REQ_NAME.match(text)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""


def runtime_requirements(path: Path) -> tuple[str, ...]:
    """The lines of ``requirements/runtime.txt`` the GPU venv installs (comments dropped,
    :data:`EXCLUDED_RUNTIME` left out).

    Raises:
        GpuCheckError: the file cannot be read.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise GpuCheckError(f"cannot read the runtime requirements {path}: {err}") from err
    keep = []
    for line in lines:
        name = requirement_name(line)
        if name and name not in EXCLUDED_RUNTIME:
            keep.append(line.split("#", 1)[0].strip())
    return tuple(keep)


def venv_requirements(cuda_version: str, runtime: Path) -> tuple[str, ...]:
    """Everything the GPU venv installs: runtime packages, GPU wheels, test runner."""
    return (*runtime_requirements(runtime), *select_wheels(cuda_version).requirements, *TEST_REQUIREMENTS)


def main(argv: Sequence[str] | None = None) -> int:
    """``cuda-version`` (nvidia-smi output on stdin) or ``requirements``; exit 2 on bad input."""
    ap = argparse.ArgumentParser(
        prog="python -m sam3d_ros.tools.gpu_setup", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "cuda-version", help="print the driver's CUDA version read from nvidia-smi output on stdin"
    )
    req = sub.add_parser("requirements", help="print the GPU venv's pip requirements, one per line")
    req.add_argument("--cuda-version", required=True, help="the driver's CUDA version, e.g. 12.4")
    req.add_argument("--runtime", type=Path, default=Path("requirements/runtime.txt"))
    args = ap.parse_args(argv)
    try:
        if args.command == "cuda-version":
            print(parse_nvidia_smi(sys.stdin.read()).cuda_version)
        else:
            print("\n".join(venv_requirements(args.cuda_version, args.runtime)))
    except GpuCheckError as err:
        print(f"gpu_setup: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

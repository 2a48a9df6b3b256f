"""``auto``: the fastest usable backend of this machine.

TensorRT when an NVIDIA GPU and the ``tensorrt`` package are present, else ONNX Runtime,
else the geometric backend. A candidate that fails to start (missing library, missing or
mismatching model files) is logged and the next one is tried; the choice is logged.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from sam3d_ros.core.backend import Backend, BackendError
from sam3d_ros.core.config import PipelineConfig

logger = logging.getLogger(__name__)

#: Where the NVIDIA driver lists GPUs (Linux).
_NVIDIA_GPUS_DIR: Final[Path] = Path("/proc/driver/nvidia/gpus")
FALLBACK: Final[str] = "geometric"


def gpu_available() -> bool:
    """Whether the NVIDIA driver reports at least one GPU."""
    try:
        return _NVIDIA_GPUS_DIR.is_dir() and any(_NVIDIA_GPUS_DIR.iterdir())
    except OSError:
        return False


def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` package is importable (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def auto_candidates(has_gpu: bool, has_tensorrt: bool) -> list[str]:
    """Backends ``auto`` tries, in order."""
    order = ["tensorrt"] if has_gpu and has_tensorrt else []
    return [*order, "onnxruntime", FALLBACK]


def create_auto_backend(
    config: PipelineConfig,
    *,
    probe_gpu: Callable[[], bool] | None = None,
    probe_tensorrt: Callable[[], bool] | None = None,
) -> Backend:
    """The first candidate of :func:`auto_candidates` that starts (probes default to
    :func:`gpu_available` and :func:`tensorrt_available`, looked up at call time).

    Raises:
        BackendError: not even the fallback could be created.
    """
    from sam3d_ros.backends.registry import create_backend

    errors: list[str] = []
    has_gpu = (probe_gpu or gpu_available)()
    has_trt = (probe_tensorrt or tensorrt_available)()
    logger.info("auto backend: GPU %s, tensorrt %s", has_gpu, has_trt)
    for name in auto_candidates(has_gpu, has_trt):
        try:
            backend = create_backend(config, name)
        except BackendError as err:
            logger.warning("auto backend: %s is not usable (%s); trying the next one", name, err)
            errors.append(f"{name}: {err}")
            continue
        logger.info("auto backend chose %s", name)
        return backend
    raise BackendError(f"auto backend: no usable backend ({'; '.join(errors)})")

"""Explicit registry of reconstruction backends.

Runtime libraries (onnxruntime, tensorrt, torch) are imported lazily by the backend
modules themselves, so listing or creating the ``geometric`` backend never imports them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from sam3d_ros.core.backend import Backend, BackendError
from sam3d_ros.core.config import PipelineConfig

logger = logging.getLogger(__name__)

#: name -> "module:ClassName" (or "module:factory", a callable taking the config and
#: returning a Backend); imported only when the backend is created.
_BACKENDS: dict[str, str] = {
    "geometric": "sam3d_ros.backends.geometric:GeometricBackend",
    "onnxruntime": "sam3d_ros.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "torch": "sam3d_ros.backends.torch_backend:TorchBackend",
    "tensorrt": "sam3d_ros.backends.tensorrt_backend:TensorRTBackend",
    # TensorRT with a GPU, else ONNX Runtime, else geometric (logs the choice)
    "auto": "sam3d_ros.backends.auto:create_auto_backend",
}


def available_backends() -> list[str]:
    """Names accepted by :func:`create_backend`."""
    return sorted(_BACKENDS)


def _load(name: str) -> Callable[[PipelineConfig], Backend]:
    try:
        target = _BACKENDS[name]
    except KeyError as err:
        raise BackendError(f"unknown backend {name!r}; valid backends: {available_backends()}") from err
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls: Callable[[PipelineConfig], Backend] = getattr(module, cls_name)
    except (ImportError, AttributeError) as err:
        raise BackendError(f"backend {name!r} is not usable here ({target}): {err}") from err
    return cls


def create_backend(config: PipelineConfig, name: str | None = None) -> Backend:
    """Create the backend named ``name`` (default: ``config.backend``)."""
    chosen = name or config.backend
    backend = _load(chosen)(config)
    logger.info("backend %s ready: %s", chosen, backend.describe())
    return backend

"""The network on ONNX Runtime: CPU execution provider, CUDA when available.

Intra-op threads: the ``ort_threads`` parameter (default 2; 0 lets ONNX Runtime decide); the
CUDA execution provider when ``ort_use_cuda`` is set and onnxruntime offers it. The ONNX file
is verified against the manifest's sha256 before the session is created.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.backends.learned import GRAPHS, LearnedBackend, NetworkOutputs, network_outputs, verified_file
from sam3d_ros.core.backend import BackendError
from sam3d_ros.core.config import PipelineConfig

logger = logging.getLogger(__name__)

_CUDA_PROVIDER = "CUDAExecutionProvider"
_CPU_PROVIDER = "CPUExecutionProvider"


class OnnxRuntimeBackend(LearnedBackend):
    """One ``InferenceSession`` per stage graph, each with a dynamic batch dimension."""

    name = "onnxruntime"

    def __init__(
        self,
        config: PipelineConfig,
        directory: Path | None = None,
        intra_op_threads: int | None = None,
        use_cuda: bool | None = None,
    ) -> None:
        super().__init__(config, directory)
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendError(f"onnxruntime is not installed: {err}") from err
        threads = config.ort_threads if intra_op_threads is None else intra_op_threads
        if use_cuda is None:
            use_cuda = config.ort_use_cuda
        available = ort.get_available_providers()
        providers = [_CPU_PROVIDER]
        if use_cuda and _CUDA_PROVIDER in available:
            providers.insert(0, _CUDA_PROVIDER)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if len(self.stages) > 1:
            # each session has its own intra-op pool; a pool's threads spin-wait after a run
            # and would take the cores from the other stage's session (a two-stage batch of
            # 8 took 20 instead of 13 ms per object on 2 cores)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions: dict[str, Any] = {}
        for stage in self.stages:
            path = verified_file(self.model_dir, self.manifest, GRAPHS[stage][0])
            try:
                self.sessions[stage] = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            except Exception as err:
                raise BackendError(f"ONNX Runtime cannot load {path}: {err}") from err
            logger.info(
                "onnxruntime %s session on %s (%d intra-op threads): %s", stage, providers, threads, path
            )
        self.session = self.sessions["shape"]
        self.providers = self.session.get_providers()
        self.threads = int(threads)

    def infer(self, inputs: NDArray[np.float32], stage: str = "shape") -> NetworkOutputs:
        """One ``session.run`` of ``stage``'s graph on the whole batch."""
        session = self.sessions[stage]
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        names = [o.name for o in session.get_outputs()]
        res = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))
        return network_outputs(res, len(x))

    def describe(self) -> str:
        """Backend, providers, threads and model."""
        return f"onnxruntime {self.providers} threads={self.threads}: {self.model_summary()}"

"""The network in PyTorch (the reference implementation; needs ``torch``).

Loads the state dict ``manifest["files"]["torch_weights"]`` (and, for a two-stage model,
``torch_weights_stage1``; verified against their sha256) into
:class:`sam3d_ros.backends.torch_model.GeometryLayoutNet`; CUDA when available.
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


class TorchBackend(LearnedBackend):
    """``GeometryLayoutNet`` in eval mode under ``torch.inference_mode``."""

    name = "torch"

    def __init__(
        self, config: PipelineConfig, directory: Path | None = None, device: str | None = None
    ) -> None:
        super().__init__(config, directory)
        try:
            import torch

            from sam3d_ros.backends.torch_model import build_model
        except ImportError as err:
            raise BackendError(f"the torch backend needs torch (requirements/dev.txt): {err}") from err
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.models: dict[str, Any] = {}
        for stage in self.stages:
            path = verified_file(self.model_dir, self.manifest, GRAPHS[stage][1])
            try:
                ck: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
                model = build_model(ck["model_config"])
                model.load_state_dict(ck["model"])
            except (OSError, RuntimeError, KeyError, TypeError) as err:
                raise BackendError(f"cannot load torch weights {path}: {err}") from err
            self.models[stage] = model.eval().to(self.device)
            logger.info("torch %s model on %s: %s", stage, self.device, path)
        self.model = self.models["shape"]
        self._torch = torch

    def infer(self, inputs: NDArray[np.float32], stage: str = "shape") -> NetworkOutputs:
        """One forward pass of ``stage``'s network on the whole batch."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
            model = self.models[stage]
            if stage == "layout":  # stage 1 needs the encoder and the global heads only
                layout, conf = model.layout_forward(x)
                named = {"layout": layout.float().cpu().numpy(), "confidence": conf.float().cpu().numpy()}
            else:
                logits, layout, conf = model(x)
                named = {
                    "occupancy_logits": logits.float().cpu().numpy(),
                    "layout": layout.float().cpu().numpy(),
                    "confidence": conf.float().cpu().numpy(),
                }
        return network_outputs(named, len(x))

    def describe(self) -> str:
        """Backend, device and model."""
        return f"torch {self._torch.__version__} on {self.device}: {self.model_summary()}"

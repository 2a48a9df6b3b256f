"""The distilled geometry and layout network (PyTorch; the reference implementation).

The torch backend (:mod:`sam3d_ros.backends.torch_backend`) runs it; training and the ONNX
export (:mod:`sam3d_ros.learning`) build and save it.

Input ``observation``: (B, C, 32, 32, 32) float32, the encoding of
:mod:`sam3d_ros.core.encoding` (C = ``NUM_CHANNELS``), one row per object.

Outputs (one forward pass, batch dimension dynamic):

* ``occupancy_logits``: (B, 32, 32, 32) float32 amodal occupancy logits on the same cube
  (sigmoid gives the probability; the iso-surface is meshed at 0.5);
* ``layout``: (B, 8) float32 amodal box in the normalised cube frame: centre offset from the
  cube centre / side (3), log(size / side) (3), sin(2 yaw), cos(2 yaw) (unnormalised);
* ``confidence``: (B,) float32 in [0, 1], the predicted IoU of the occupancy with the truth.

Architecture: a small 3D U-Net. Stem at 16^3 (stride 2), encoder 16^3 -> 8^3 -> 4^3, decoder
back to 16^3 with skips, a transposed convolution to 32^3 fused with the raw input
(pixel/voxel-aligned detail), constant normalised xyz coordinates concatenated to the input
(CoordConv). Global pooling of the bottleneck feeds the layout and confidence heads, so the
layout needs the encoder only: a two-stage model's stage 1 is exported as the layout-only
graph (:class:`LayoutNet`, outputs ``layout`` and ``confidence``), about 40 % of the full
network's work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import torch
from torch import Tensor, nn

from sam3d_ros.core.encoding import GRID_SIZE, NUM_CHANNELS

#: ONNX / runtime tensor names.
INPUT_NAME: Final[str] = "observation"
OUTPUT_NAMES: Final[tuple[str, str, str]] = ("occupancy_logits", "layout", "confidence")
#: Outputs of the layout-only graph (a two-stage model's stage 1).
LAYOUT_OUTPUT_NAMES: Final[tuple[str, str]] = ("layout", "confidence")
LAYOUT_DIM: Final[int] = 8


@dataclass(frozen=True)
class ModelConfig:
    """Widths of the network (channels at 16^3, 8^3, 4^3 and of the 32^3 head)."""

    in_channels: int = NUM_CHANNELS
    grid: int = GRID_SIZE
    c16: int = 16
    c8: int = 32
    c4: int = 64
    c32: int = 8

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class GeometryLayoutNet(nn.Module):
    """See the module docstring."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        n = cfg.grid
        lin = torch.linspace(-0.5 + 0.5 / n, 0.5 - 0.5 / n, n)
        gx, gy, gz = torch.meshgrid(lin, lin, lin, indexing="ij")
        self.register_buffer("coords", torch.stack([gx, gy, gz])[None], persistent=False)
        cin = cfg.in_channels + 3
        self.stem = nn.Sequential(_block(cin, cfg.c16, stride=2), _block(cfg.c16, cfg.c16))
        self.down8 = nn.Sequential(_block(cfg.c16, cfg.c8, stride=2), _block(cfg.c8, cfg.c8))
        self.down4 = nn.Sequential(
            _block(cfg.c8, cfg.c4, stride=2), _block(cfg.c4, cfg.c4), _block(cfg.c4, cfg.c4)
        )
        self.up8 = nn.ConvTranspose3d(cfg.c4, cfg.c8, 2, stride=2)
        self.dec8 = _block(2 * cfg.c8, cfg.c8)
        self.up16 = nn.ConvTranspose3d(cfg.c8, cfg.c16, 2, stride=2)
        self.dec16 = _block(2 * cfg.c16, cfg.c16)
        self.up32 = nn.ConvTranspose3d(cfg.c16, cfg.c32, 2, stride=2)
        self.fuse32 = nn.Sequential(nn.Conv3d(cfg.c32 + cin, cfg.c32, 1), nn.ReLU(inplace=True))
        self.head32 = nn.Conv3d(cfg.c32, 1, 3, padding=1)
        self.global_head = nn.Sequential(
            nn.Linear(cfg.c4 * 2, 128), nn.ReLU(inplace=True), nn.Linear(128, LAYOUT_DIM + 1)
        )

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        coords: Tensor = self.coords  # type: ignore[assignment]
        x = torch.cat([x, coords.expand(x.shape[0], -1, -1, -1, -1)], dim=1)
        f16 = self.stem(x)
        f8 = self.down8(f16)
        return x, f16, f8, self.down4(f8)

    def _heads(self, f4: Tensor) -> tuple[Tensor, Tensor]:
        g = torch.cat([f4.mean(dim=(2, 3, 4)), f4.amax(dim=(2, 3, 4))], dim=1)
        h = self.global_head(g)
        return h[:, :LAYOUT_DIM], torch.sigmoid(h[:, LAYOUT_DIM])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, C, n, n, n) -> (occupancy_logits (B, n, n, n), layout (B, 8), confidence (B,))."""
        xc, f16, f8, f4 = self._encode(x)
        d8 = self.dec8(torch.cat([self.up8(f4), f8], dim=1))
        d16 = self.dec16(torch.cat([self.up16(d8), f16], dim=1))
        d32 = self.fuse32(torch.cat([self.up32(d16), xc], dim=1))
        logits = self.head32(d32)[:, 0]
        layout, confidence = self._heads(f4)
        return logits, layout, confidence

    def layout_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, n, n, n) -> (layout (B, 8), confidence (B,)): the encoder and the global
        heads only (no decoder), as a two-stage model's stage 1 runs it."""
        return self._heads(self._encode(x)[3])


class LayoutNet(nn.Module):
    """The layout-only graph of a :class:`GeometryLayoutNet` (for export as stage 1)."""

    def __init__(self, net: GeometryLayoutNet) -> None:
        super().__init__()
        self.net = net
        self.cfg = net.cfg

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """See :meth:`GeometryLayoutNet.layout_forward`."""
        return self.net.layout_forward(x)


def build_model(cfg: dict[str, Any] | ModelConfig | None = None) -> GeometryLayoutNet:
    """A network from a :class:`ModelConfig` or its dict."""
    if isinstance(cfg, dict):
        cfg = ModelConfig(**cfg)
    return GeometryLayoutNet(cfg)

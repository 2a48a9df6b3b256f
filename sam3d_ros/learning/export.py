"""Export of trained weights to the shipped model files and ``manifest.json``.

Writes into the models directory: ``geometry_layout.onnx`` (opset 17, dynamic batch),
``geometry_layout.pt`` (torch state dict + model config, for the ``torch`` backend) and
``manifest.json`` (sha256 and size of each file, input/output names, shapes and meanings, the
encoding and its normalisation, the model config, the training record and, when given,
the held-out validation metrics). The export checks ONNX Runtime against PyTorch on random
inputs and records the largest absolute difference.

A two-stage model (``stage1`` given) also ships its stage 1, the layout network whose box
places each object's stage-2 cube: the stage-1 model directory's weights copied as
``geometry_layout_stage1.pt`` and their layout-only graph (no decoder) exported as
``geometry_layout_stage1.onnx`` (``files.onnx_stage1``/``files.torch_weights_stage1``).
A layout-only training run (a stage 1 of its own) exports a stage-1 model directory
(:func:`export_layout_model`): those two files and a manifest, no shape graph; it serves
as the stage 1 of a two-stage export and is not a model the backends run by itself.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from sam3d_ros.backends.learned import (
    ONNX_KEY,
    STAGE1_ONNX_KEY,
    STAGE1_WEIGHTS_KEY,
    WEIGHTS_KEY,
    load_manifest,
    sha256_file,
    stage1_files,
    write_manifest,
)
from sam3d_ros.backends.torch_model import (
    INPUT_NAME,
    LAYOUT_OUTPUT_NAMES,
    OUTPUT_NAMES,
    GeometryLayoutNet,
    LayoutNet,
    build_model,
)
from sam3d_ros.core import encoding as E

logger = logging.getLogger(__name__)

ONNX_NAME: Final[str] = "geometry_layout.onnx"
WEIGHTS_NAME: Final[str] = "geometry_layout.pt"
#: Stage 1 (layout) of a two-stage model.
STAGE1_ONNX_NAME: Final[str] = "geometry_layout_stage1.onnx"
STAGE1_WEIGHTS_NAME: Final[str] = "geometry_layout_stage1.pt"
OPSET: Final[int] = 17
#: Parity check: random inputs, batch size, tolerance.
PARITY_BATCH: Final[int] = 3
PARITY_ATOL: Final[float] = 1e-4


class ExportError(RuntimeError):
    """Raised when the exported ONNX disagrees with PyTorch."""


def export_onnx(model: GeometryLayoutNet, path: str, opset: int = OPSET, layout_only: bool = False) -> None:
    """Export ``model`` (eval mode) to ONNX with a dynamic batch dimension; ``layout_only``:
    the graph of :meth:`GeometryLayoutNet.layout_forward` (outputs ``LAYOUT_OUTPUT_NAMES``)."""
    model = model.eval()
    n = model.cfg.grid
    dummy = torch.zeros(2, model.cfg.in_channels, n, n, n)
    graph: torch.nn.Module = LayoutNet(model).eval() if layout_only else model
    outputs = list(LAYOUT_OUTPUT_NAMES if layout_only else OUTPUT_NAMES)
    torch.onnx.export(
        graph,
        (dummy,),
        path,
        input_names=[INPUT_NAME],
        output_names=outputs,
        dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )


def io_spec() -> dict[str, Any]:
    """Input/output names, shapes, dtypes and meanings (the manifest's ``inputs``/``outputs``)."""
    n = E.GRID_SIZE
    return {
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": ["batch", E.NUM_CHANNELS, n, n, n],
                "dtype": "float32",
                "meaning": "per-object encoding on the object's cube (sam3d_ros.core.encoding); "
                "channels in 'encoding.channels' order, voxel [i, j, k] along the cube's x, y, z",
            }
        ],
        "outputs": [
            {
                "name": OUTPUT_NAMES[0],
                "shape": ["batch", n, n, n],
                "dtype": "float32",
                "meaning": "amodal occupancy logits on the same cube; sigmoid > 0.5 is inside",
            },
            {
                "name": OUTPUT_NAMES[1],
                "shape": ["batch", 8],
                "dtype": "float32",
                "meaning": "amodal box in the normalised cube frame: centre offset from the cube centre / "
                "side (3), log(size / side) (3) with size_x >= size_y, sin(2 yaw), cos(2 yaw) about the "
                "cube z axis (support normal)",
            },
            {
                "name": OUTPUT_NAMES[2],
                "shape": ["batch"],
                "dtype": "float32",
                "meaning": "confidence in [0, 1]: the predicted voxel IoU of the occupancy with the truth",
            },
        ],
    }


def encoding_spec(stage2_local_support: bool = False) -> dict[str, Any]:
    """The encoding and normalisation constants the model was trained with
    (``stage2_local_support``: its stage-2 cubes rested on the supporting objects)."""
    return {
        "grid_size": E.GRID_SIZE,
        "channels": list(E.CHANNELS),
        "extent_factor": E.EXTENT_FACTOR,
        "min_side_m": E.MIN_SIDE,
        "max_side_m": E.MAX_SIDE,
        "back_shift": E.BACK_SHIFT,
        "floor_voxels": E.FLOOR_VOXELS,
        "tsdf_trunc_voxels": E.TSDF_TRUNC_VOXELS,
        "amodal_extent_factor": E.AMODAL_EXTENT_FACTOR,
        "amodal_box_pad": E.AMODAL_BOX_PAD,
        "amodal_box_pad_m": E.AMODAL_BOX_PAD_M,
        "stage2_local_support": stage2_local_support,
        "normalisation": "object-centric cube: z = support-plane normal, x = footprint major axis, origin = "
        "observed centroid projected on the plane; side = clip(extent_factor * observed extent, min_side, "
        "max_side) metres (a two-stage model's stage 2: the cube of encoding.amodal_grid_frame, side = amodal_extent_factor * the union of the observed box and the stage-1 box padded by amodal_box_pad relative + amodal_box_pad_m); lengths in the layout output are divided by the side; occupancy/mask/free/"
        "unknown/below-plane in {0, 1}, RGB in [0, 1], tsdf in [-1, 1]",
    }


def parity_check(
    model: GeometryLayoutNet, onnx_path: Path, seed: int = 0, layout_only: bool = False
) -> float:
    """Largest |ONNX Runtime - PyTorch| over all outputs on random inputs (``layout_only``:
    the layout-only graph against the full network's layout and confidence).

    Raises:
        ExportError: above ``PARITY_ATOL``.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    n = model.cfg.grid
    x = rng.random((PARITY_BATCH, model.cfg.in_channels, n, n, n), dtype=np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = LAYOUT_OUTPUT_NAMES if layout_only else OUTPUT_NAMES
    got = sess.run(list(names), {INPUT_NAME: x})
    with torch.inference_mode():
        full = dict(zip(OUTPUT_NAMES, (t.numpy() for t in model.eval()(torch.from_numpy(x))), strict=True))
    ref = [full[k] for k in names]
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(got, ref, strict=True))
    if diff > PARITY_ATOL:
        raise ExportError(
            f"ONNX Runtime ({onnx_path.name}) differs from PyTorch by {diff:.3g} > {PARITY_ATOL}"
        )
    return diff


def export_stage1(stage1: Path, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Stage 1 of a two-stage model from the model directory ``stage1``: its (stage-1)
    torch weights copied as ``STAGE1_WEIGHTS_NAME`` and their layout-only graph exported as
    ``STAGE1_ONNX_NAME``. Returns (ONNX file entry, weights file entry, parity)."""
    _, src_weights = stage1_files(stage1)
    weights = out_dir / STAGE1_WEIGHTS_NAME
    shutil.copyfile(src_weights, weights)
    ck = torch.load(weights, map_location="cpu", weights_only=True)
    net = build_model(ck["model_config"])
    net.load_state_dict(ck["model"])
    onnx_path = out_dir / STAGE1_ONNX_NAME
    export_onnx(net.eval(), str(onnx_path), opset=OPSET, layout_only=True)
    parity = parity_check(net, onnx_path, layout_only=True)
    return _file_entry(onnx_path), _file_entry(weights), parity


def export_layout_model(model: GeometryLayoutNet, out_dir: Path, training: dict[str, Any]) -> dict[str, Any]:
    """Write a layout-only run's network into ``out_dir`` as a stage-1 model directory:
    its state dict as ``STAGE1_WEIGHTS_NAME``, its layout-only graph as ``STAGE1_ONNX_NAME``
    and a manifest with those two files, the stage-1 io, the encoding and ``training``;
    returns the manifest (:func:`sam3d_ros.backends.learned.stage1_files` reads it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    weights = out_dir / STAGE1_WEIGHTS_NAME
    torch.save({"model": model.state_dict(), "model_config": model.cfg.to_dict()}, weights)
    onnx_path = out_dir / STAGE1_ONNX_NAME
    export_onnx(model, str(onnx_path), opset=OPSET, layout_only=True)
    parity = parity_check(model, onnx_path, layout_only=True)
    spec = io_spec()
    manifest = {
        "format_version": 1,
        "model": "geometry_layout_stage1",
        "description": "stage 1 of a two-stage model only (the layout-only graph, trained for the "
        "layout alone): serves as 'sam3d-ros train --stage1/--ship-stage1'; the backends do not "
        "run it by itself; its confidence output is the initial weights' (not trained by this run, "
        "and a stage 1's confidence is unused)",
        "files": {STAGE1_ONNX_KEY: _file_entry(onnx_path), STAGE1_WEIGHTS_KEY: _file_entry(weights)},
        "stages": {"layout": "this network (encoder and global heads; the decoder is unused)"},
        "inputs": spec["inputs"],
        "outputs": [o for o in spec["outputs"] if o["name"] in LAYOUT_OUTPUT_NAMES],
        "encoding": encoding_spec(),
        "model_config": model.cfg.to_dict(),
        "export": {
            "torch": torch.__version__,
            "opset": OPSET,
            "stage1_parity_max_abs_diff": parity,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "training": training,
    }
    write_manifest(out_dir, manifest)
    return manifest


def _file_entry(path: Path) -> dict[str, Any]:
    return {"name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def export_model(
    model: GeometryLayoutNet,
    out_dir: Path,
    training: dict[str, Any],
    validation: dict[str, Any] | None = None,
    stage1: Path | None = None,
) -> dict[str, Any]:
    """Write the ONNX, the state dict and the manifest into ``out_dir`` (and, when ``stage1``
    names a model directory, its layout network as stage 1); returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    onnx_path = out_dir / ONNX_NAME
    export_onnx(model, str(onnx_path), opset=OPSET)
    parity = parity_check(model, onnx_path)
    weights_path = out_dir / WEIGHTS_NAME
    torch.save({"model": model.state_dict(), "model_config": model.cfg.to_dict()}, weights_path)
    files = {
        ONNX_KEY: _file_entry(onnx_path),
        WEIGHTS_KEY: _file_entry(weights_path),
    }
    stages: dict[str, Any] = {
        "shape": "this network, on the cube of the stage-1 box" if stage1 else "this network"
    }
    stage1_parity = None
    if stage1 is not None:
        files[STAGE1_ONNX_KEY], files[STAGE1_WEIGHTS_KEY], stage1_parity = export_stage1(stage1, out_dir)
        src_manifest = load_manifest(stage1)
        trained_on = training.get("config", {}).get("stage1_sha256", "")
        stages["layout"] = {
            # False: stage 2 was trained on the cubes of another stage 1 ('train --ship-stage1')
            "shape_trained_on_this_layout": sha256_file(stage1_files(stage1)[0]) == trained_on,
            "source_weights_sha256": files[STAGE1_WEIGHTS_KEY]["sha256"],
            "source_trained": src_manifest.get("training", {}).get("finished_at"),
            "source_command": src_manifest.get("training", {}).get("command"),
            "outputs": list(LAYOUT_OUTPUT_NAMES),
            "meaning": "stage 1, the layout-only graph (encoder and global heads) of the source network: "
            "its amodal box on the observed-extent cube places and sizes the cube "
            "(encoding.stage2_grid_frame) that stage 2 encodes again and predicts the shape on",
        }
    manifest = {
        "format_version": 1,
        "model": "geometry_layout",
        "description": "distilled geometry and layout network: amodal occupancy (32^3), amodal box and "
        "confidence per object in one forward pass",
        "files": files,
        "stages": stages,
        **io_spec(),
        # as the training data was encoded (its dataset recipe says so)
        "encoding": encoding_spec(
            bool(training.get("train_data", {}).get("recipe", {}).get("stage2_local_support", False))
        ),
        "model_config": model.cfg.to_dict(),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "export": {
            "torch": torch.__version__,
            "opset": OPSET,
            "parity_max_abs_diff": parity,
            "stage1_parity_max_abs_diff": stage1_parity,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "training": training,
        "validation": validation,
    }
    write_manifest(out_dir, manifest)
    return manifest

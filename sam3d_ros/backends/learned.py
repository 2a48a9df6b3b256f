"""Shared pre- and post-processing of the learned backends (onnxruntime, torch, tensorrt).

Pre-processing encodes every object of a frame (:mod:`sam3d_ros.core.encoding`) into one
(B, C, 32, 32, 32) float32 batch; a runtime runs the network once on the whole batch;
post-processing turns each row's occupancy logits into a :class:`VoxelShape` on the
object's cube (``camera_T_grid``, ``origin``, ``voxel_size`` of its :class:`GridFrame`), so
meshing, pose and collision shapes stay those of the shared pipeline.

Model files live in the models directory (``$SAM3D_MODEL_DIR``, default the package's
``models/``) and are verified against ``manifest.json`` (sha256) before they are loaded.

Runtime options are parameters of the :class:`PipelineConfig`: ``model_dir`` (empty:
``$SAM3D_MODEL_DIR``, else the package's ``models/``), ``ort_threads``, ``ort_use_cuda``,
``trt_precision`` and ``engine_cache_dir`` (empty: ``$SAM3D_ENGINE_CACHE``, else
``~/.cache/sam3d_ros/engines``).
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from sam3d_ros._paths import share_dir
from sam3d_ros.core.backend import Backend, BackendError
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.encoding import (
    CHANNELS,
    GRID_SIZE,
    EncodingError,
    GridFrame,
    decode_layout,
    encode_object,
    encode_objects,
    stage2_cube,
)
from sam3d_ros.core.types import ObjectObservation, SceneContext, VoxelShape

logger = logging.getLogger(__name__)

MANIFEST_NAME: Final[str] = "manifest.json"
MODEL_DIR_ENV: Final[str] = "SAM3D_MODEL_DIR"
ENGINE_CACHE_ENV: Final[str] = "SAM3D_ENGINE_CACHE"
#: manifest["files"] keys of the ONNX model and the torch state dict (the shape stage).
ONNX_KEY: Final[str] = "onnx"
WEIGHTS_KEY: Final[str] = "torch_weights"
#: ... and of a two-stage model's stage 1 (the layout), when the manifest has them.
STAGE1_ONNX_KEY: Final[str] = "onnx_stage1"
STAGE1_WEIGHTS_KEY: Final[str] = "torch_weights_stage1"
#: The graphs of a model: stage name -> (ONNX key, torch weights key).
GRAPHS: Final[dict[str, tuple[str, str]]] = {
    "shape": (ONNX_KEY, WEIGHTS_KEY),
    "layout": (STAGE1_ONNX_KEY, STAGE1_WEIGHTS_KEY),
}
#: The outputs every graph has; a full graph also has ``occupancy_logits``.
LAYOUT_OUTPUTS: Final[tuple[str, str]] = ("layout", "confidence")
OCCUPANCY_OUTPUT: Final[str] = "occupancy_logits"
#: Rows whose occupancy never exceeds this level give no shape (None).
MIN_PEAK_OCCUPANCY: Final[float] = 0.5
_HASH_CHUNK = 1 << 20


class ModelFileError(BackendError):
    """A model file or the manifest is missing, malformed or does not match its sha256."""


@dataclass(frozen=True)
class NetworkOutputs:
    """Raw outputs of one batched forward pass (B rows).

    Attributes:
        occupancy_logits: (B, n, n, n) float32; (B, 0, 0, 0) from a layout-only graph (a
            two-stage model's stage 1).
        layout: (B, 8) float32 (see :mod:`sam3d_ros.backends.torch_model`).
        confidence: (B,) float32 in [0, 1].
    """

    occupancy_logits: NDArray[np.float32]
    layout: NDArray[np.float32]
    confidence: NDArray[np.float32]


def network_outputs(named: dict[str, Any], batch: int) -> NetworkOutputs:
    """:class:`NetworkOutputs` from a runtime's outputs by name (``occupancy_logits`` may be
    missing: a layout-only graph).

    Raises:
        BackendError: ``layout`` or ``confidence`` missing.
    """
    missing = [k for k in LAYOUT_OUTPUTS if k not in named]
    if missing:
        raise BackendError(f"the graph has no output(s) {missing}; it has {sorted(named)}")
    occ = named.get(OCCUPANCY_OUTPUT)
    return NetworkOutputs(
        occupancy_logits=(
            np.zeros((batch, 0, 0, 0), np.float32) if occ is None else np.asarray(occ, dtype=np.float32)
        ),
        layout=np.asarray(named["layout"], dtype=np.float32),
        confidence=np.asarray(named["confidence"], dtype=np.float32).reshape(-1),
    )


def model_dir(configured: str = "") -> Path:
    """``configured`` (the ``model_dir`` parameter) when set, else ``$SAM3D_MODEL_DIR``, else
    the package's ``models/`` directory."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(MODEL_DIR_ENV)
    return Path(env) if env else share_dir() / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(directory: Path) -> dict[str, Any]:
    """Parse ``directory/manifest.json`` and check it matches this code's encoding.

    Raises:
        ModelFileError: missing/unparsable manifest, or a grid size/channel list that
            differs from :mod:`sam3d_ros.core.encoding`.
    """
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelFileError(f"cannot read model manifest {path}: {err}") from err
    enc = manifest.get("encoding", {})
    if enc.get("grid_size") != GRID_SIZE or tuple(enc.get("channels", ())) != CHANNELS:
        raise ModelFileError(
            f"{path}: model encoding {enc.get('grid_size')!r}/{enc.get('channels')!r} does not match "
            f"this code's grid {GRID_SIZE} / channels {list(CHANNELS)}"
        )
    return manifest


def portable_text(text: str, repo_root: Path | None = None) -> str:
    """``text`` without this machine's paths: the repository root becomes ``.``, the home
    directory ``~`` and a venv's ``bin/`` prefix of a command is dropped (so a manifest says
    ``sam3d-ros train --cache-dir ~/.cache/...``, not where one machine keeps its venv)."""
    root = str((repo_root or Path(__file__).resolve().parents[2]).resolve())
    home = str(Path.home())
    out = re.sub(r"\S*/bin/(sam3d-ros|python3?)\b", r"\1", text)
    out = out.replace(root + "/", "").replace(root, ".")
    return out.replace(home + "/", "~/").replace(home, "~")


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None (strict JSON has no NaN/Infinity); strings lose this
    machine's paths (:func:`portable_text`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return portable_text(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (indented, strict JSON: NaN as null, trailing newline, no
    machine paths)."""
    (out_dir / MANIFEST_NAME).write_text(json.dumps(_json_safe(manifest), indent=2, allow_nan=False) + "\n")


def verified_file(directory: Path, manifest: dict[str, Any], key: str) -> Path:
    """The model file ``manifest["files"][key]`` after checking its sha256.

    Raises:
        ModelFileError: no such entry, missing file, or a sha256 mismatch (naming both).
    """
    try:
        entry = manifest["files"][key]
        path = Path(directory) / entry["name"]
        expected = str(entry["sha256"])
    except (KeyError, TypeError) as err:
        raise ModelFileError(
            f"manifest in {directory} has no files[{key!r}] entry with name and sha256"
        ) from err
    if not path.is_file():
        raise ModelFileError(f"model file {path} (manifest files[{key!r}]) does not exist")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelFileError(
            f"model file {path} has sha256 {actual}, but the manifest says {expected}: "
            "refusing to load a file that does not match its manifest"
        )
    return path


def sigmoid(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """Numerically stable logistic function, float32."""
    x32 = np.asarray(x, dtype=np.float32)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x32)), dtype=np.float32)


def decode_outputs(out: NetworkOutputs, frames: Sequence[GridFrame | None]) -> list[VoxelShape | None]:
    """One :class:`VoxelShape` (or None) per entry of ``frames``; network rows follow the
    non-None frames in order. Rows whose occupancy never reaches ``MIN_PEAK_OCCUPANCY`` give
    None."""
    n_rows = sum(f is not None for f in frames)
    if out.occupancy_logits.shape[0] != n_rows:
        raise BackendError(f"network returned {out.occupancy_logits.shape[0]} rows for {n_rows} objects")
    occ = sigmoid(out.occupancy_logits)
    shapes: list[VoxelShape | None] = []
    row = 0
    for gf in frames:
        if gf is None:
            shapes.append(None)
            continue
        o = occ[row]
        conf = float(np.clip(out.confidence[row], 0.0, 1.0))
        row += 1
        if float(o.max()) < MIN_PEAK_OCCUPANCY:
            shapes.append(None)
            continue
        shapes.append(
            VoxelShape(
                occupancy=np.ascontiguousarray(o),
                voxel_size=float(gf.voxel_size),
                origin=gf.origin.copy(),
                camera_T_grid=gf.camera_T_grid.copy(),
                confidence=conf,
            )
        )
    return shapes


def stage_graphs(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The stages a model's manifest provides, in the order they run: ``("layout",
    "shape")`` for a two-stage model, ``("shape",)`` for a one-stage one."""
    files = manifest.get("files", {})
    return ("layout", "shape") if STAGE1_ONNX_KEY in files else ("shape",)


def stage1_files(directory: Path) -> tuple[Path, Path]:
    """The verified ONNX graph and torch weights of ``directory``'s model that serve as
    stage 1 (layout) of a new two-stage model: its stage-1 files when it has them, else its
    only graph (a one-stage network's layout head).

    Raises:
        ModelFileError: no manifest, or a file that does not match it.
    """
    manifest = load_manifest(directory)
    onnx_key, weights_key = GRAPHS["layout"] if "layout" in stage_graphs(manifest) else GRAPHS["shape"]
    return verified_file(directory, manifest, onnx_key), verified_file(directory, manifest, weights_key)


class LearnedBackend(Backend):
    """Base of the network backends: encode, one batched forward pass, decode.

    Subclasses implement :meth:`infer`. After each call ``last_layouts`` holds, per
    observation, the predicted amodal box ``(camera_T_box, size)`` or None.
    """

    def __init__(self, config: PipelineConfig, directory: Path | None = None) -> None:
        super().__init__(config)
        self.model_dir = Path(directory) if directory is not None else model_dir(config.model_dir)
        self.manifest = load_manifest(self.model_dir)
        if ONNX_KEY not in self.manifest.get("files", {}):
            raise ModelFileError(
                f"{self.model_dir} has no shape graph (files.{ONNX_KEY}): a stage-1 model directory "
                "serves only as the stage 1 of a two-stage export ('sam3d-ros train --stage1/--ship-stage1')"
            )
        #: the stages this model runs, in order (see :func:`stage_graphs`)
        self.stages = stage_graphs(self.manifest)
        #: stage 2 was trained on cubes grounded on the object each one rests on
        self.stage2_local_support = bool(self.manifest.get("encoding", {}).get("stage2_local_support", False))
        self.last_layouts: list[tuple[NDArray[np.float64], NDArray[np.float64]] | None] = []

    @abc.abstractmethod
    def infer(self, inputs: NDArray[np.float32], stage: str = "shape") -> NetworkOutputs:
        """Run the graph of ``stage`` (a key of :data:`GRAPHS`) on (B, C, n, n, n) float32
        inputs (B >= 1)."""

    def _run(self, inputs: NDArray[np.float32], stage: str) -> NetworkOutputs:
        try:
            return self.infer(inputs, stage)
        except BackendError:
            raise
        except Exception as err:
            raise BackendError(
                f"{self.name} {stage} inference on a batch of {inputs.shape[0]} failed: {err!r}"
            ) from err

    def reconstruct(
        self, scene: SceneContext, observations: Sequence[ObjectObservation]
    ) -> list[VoxelShape | None]:
        """Encode all objects, run one batched pass per stage, decode (see the module
        docstring). A two-stage model first predicts each object's amodal box on its
        observed-extent cube (stage 1), then encodes it again on the cube that box gives
        (:func:`~sam3d_ros.core.encoding.stage2_cube`) and predicts the shape there.

        Raises:
            BackendError: the runtime failed on the batch (the pipeline skips the frame's
                objects with reason ``backend_error``).
        """
        inputs, frames = encode_objects(scene, observations)
        self.last_layouts = [None] * len(observations)
        if inputs.shape[0] == 0:
            return [None] * len(observations)
        out = self._run(inputs, self.stages[0])
        row = 0
        for i, gf in enumerate(frames):
            if gf is not None:
                self.last_layouts[i] = decode_layout(out.layout[row], gf)
                row += 1
        if len(self.stages) == 1:
            return decode_outputs(out, frames)
        frames2: list[GridFrame | None] = []
        feats2: list[NDArray[np.float32]] = []
        rows = iter(out.layout)
        for obs, gf in zip(observations, frames, strict=True):
            if gf is None:
                frames2.append(None)
                continue
            try:
                cube = stage2_cube(scene, obs, gf, next(rows), local_support=self.stage2_local_support)
                f2, gf2 = encode_object(scene, obs, cube)
            except EncodingError as err:  # a degenerate box: the observed-extent cube
                logger.debug("object %d: stage-1 box unusable (%s); stage-1 cube", obs.instance_id, err)
                f2, gf2 = encode_object(scene, obs, gf)
            frames2.append(gf2)
            feats2.append(f2)
        return decode_outputs(self._run(np.stack(feats2), "shape"), frames2)

    def model_summary(self) -> str:
        """Short model description from the manifest (for :meth:`describe`)."""
        files = self.manifest.get("files", {})
        sha = str(files.get(ONNX_KEY, {}).get("sha256", "?"))[:12]
        return f"geometry_layout onnx sha256 {sha}, trained {self.manifest.get('training', {}).get('finished_at', '?')}"

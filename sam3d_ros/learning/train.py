"""Training of the geometry and layout network on CPU (``sam3d-ros train``).

Recipe (:class:`TrainConfig`): cached datasets built by :func:`sam3d_ros.learning.data.
build_dataset` under ``cache_dir/datasets`` (train and val splits use disjoint scene seeds),
Adam with a one-cycle learning rate, random mirror augmentation of the cube (x and y flips;
the layout target is mirrored with it), loss = BCE(occupancy, amodal fraction) + soft Dice
+ layout smooth-L1 (centre, log-size; yaw only for boxes) + confidence BCE towards the
detached IoU of the prediction + ``distill_weight`` * BCE(occupancy, teacher) on rows with a
stored teacher output. A ``layout_only`` run trains a two-stage model's stage 1: only the
encoder and the global heads run (:meth:`GeometryLayoutNet.layout_forward`) and the loss is
the layout term alone (the decoder keeps its initial weights and is never used).

Everything the run produces lives in ``run_dir`` (outside the repository by default):
``checkpoint.pt`` (resumable: model, optimiser, scheduler, epoch, RNG states, history),
``best.pt`` (lowest validation loss), ``history.json``, ``curves.png`` (drawn with Pillow)
and ``run.json`` (exact command, seed, data summaries, wall time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from sam3d_ros._progress import progress_bar
from sam3d_ros.backends.torch_model import GeometryLayoutNet, ModelConfig, build_model
from sam3d_ros.core.metrics import VISIBLE_FRACTION_SPLIT
from sam3d_ros.learning.data import ArrayDataset, build_dataset, load_dataset

logger = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """Raised for unusable run directories or checkpoints."""


def default_cache_dir() -> Path:
    """``~/.cache/sam3d_ros`` (datasets, runs, engines): never inside the repository."""
    return Path.home() / ".cache" / "sam3d_ros"


@dataclass
class TrainConfig:
    """The training recipe (every field is recorded in ``run.json``)."""

    source: str = "raycast"
    train_frames: int = 1200
    val_frames: int = 80
    seed: int = 0
    epochs: int = 6
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dice_weight: float = 0.5
    layout_weight: float = 0.5
    confidence_weight: float = 0.1
    distill_weight: float = 0.5
    #: objects less than VISIBLE_FRACTION_SPLIT visible appear this many times per epoch
    #: (they are rare in tabletop scenes but form one of the two gate buckets)
    low_visibility_repeat: int = 1
    #: stop after this many epochs of the ``epochs``-long schedule (0: run it all); the
    #: schedule is unchanged, so a later call without it resumes where this one stopped
    stop_after_epochs: int = 0
    max_minutes: float = 25.0
    threads: int = 1
    data_workers: int = 1
    model: dict[str, Any] = field(default_factory=lambda: ModelConfig().to_dict())
    #: start from these weights (a shipped ``.pt`` or a run's ``final.pt``; "" = random
    #: initialisation); the path as given (relative to the repository) and its sha256
    #: are part of the recipe
    init_weights: str = ""
    init_weights_sha256: str = ""
    #: two-stage model: the stage-1 (layout) ONNX graph whose boxes place the cubes this
    #: network (stage 2, the shape) is trained on ("" = one stage); path as given and sha256
    stage1_onnx: str = ""
    stage1_sha256: str = ""
    #: train a two-stage model's stage 1 (the layout graph) on the observed-extent cubes:
    #: layout loss only, encoder and global heads only (see the module docstring)
    layout_only: bool = False


#: TrainConfig fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = ("max_minutes", "threads", "data_workers", "stop_after_epochs")


def _recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _RESUMABLE_CHANGES}


def dataset_dir(
    cache_dir: Path, source: str, split: str, frames: int, seed: int, stage1_sha256: str = ""
) -> Path:
    """Where the cached dataset of a recipe lives (``dataset:<root>`` sources are named
    ``dataset-<root name>-<sha256 of the resolved root, 8 hex>``; stage-2 encodings end in
    ``_st2-<stage-1 sha256, 8 hex>``)."""
    if source.startswith("dataset:"):
        root = Path(source.split(":", 1)[1]).expanduser().resolve()
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
        source = f"dataset-{root.name}-{digest}"
    suffix = f"_st2-{stage1_sha256[:8]}" if stage1_sha256 else ""
    return cache_dir / "datasets" / f"{source}_{split}_{frames}_s{seed}{suffix}"


def epoch_rows(ds: ArrayDataset, low_visibility_repeat: int) -> np.ndarray:
    """Row indices of one epoch: every row once, rows less than ``VISIBLE_FRACTION_SPLIT``
    visible ``low_visibility_repeat`` times."""
    rows = np.arange(len(ds))
    low = rows[ds.visible_fraction < VISIBLE_FRACTION_SPLIT]
    return np.concatenate([rows, *([low] * max(low_visibility_repeat - 1, 0))])


def _augment(batch: dict[str, Tensor], gen: torch.Generator) -> dict[str, Tensor]:
    """Random mirror of the whole batch about the cube's x and/or y mid-plane."""
    out = dict(batch)
    lay = out["layout"].clone()
    for axis in (0, 1):
        if bool(torch.rand((), generator=gen) < 0.5):
            out["inputs"] = torch.flip(out["inputs"], dims=(2 + axis,))
            out["target"] = torch.flip(out["target"], dims=(1 + axis,))
            if "teacher" in out:
                out["teacher"] = torch.flip(out["teacher"], dims=(1 + axis,))
            lay[:, axis] = -lay[:, axis]
            lay[:, 6] = -lay[:, 6]  # yaw -> -yaw (y flip) or pi - yaw (x flip): sin(2 yaw) flips
    out["layout"] = lay
    return out


def _layout_losses(layout: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(box term, yaw term): smooth-L1 of the centre and log-size (rows with a box), of
    (sin 2 yaw, cos 2 yaw) (rows whose box has a yaw), batch means."""
    m = batch["layout_mask"]
    t = batch["layout"]
    box_l = (
        F.smooth_l1_loss(layout[:, :6], t[:, :6], beta=0.05, reduction="none").mean(dim=1) * m[:, 0]
    ).mean()
    yaw_l = (
        F.smooth_l1_loss(layout[:, 6:], t[:, 6:], beta=0.05, reduction="none").mean(dim=1) * m[:, 1]
    ).mean()
    return box_l, yaw_l


def compute_losses(
    outputs: tuple[Tensor, Tensor, Tensor], batch: dict[str, Tensor], cfg: TrainConfig
) -> dict[str, Tensor]:
    """Loss terms (scalars) and ``total``; ``iou`` is the mean voxel IoU at 0.5 (no grad)."""
    logits, layout, conf = outputs
    y = batch["target"]
    bce = F.binary_cross_entropy_with_logits(logits, y)
    p = torch.sigmoid(logits)
    inter = (p * y).sum(dim=(1, 2, 3))
    dice = 1.0 - (2 * inter + 1.0) / (p.sum(dim=(1, 2, 3)) + y.sum(dim=(1, 2, 3)) + 1.0)
    dice_l = dice.mean()
    box_l, yaw_l = _layout_losses(layout, batch)
    with torch.no_grad():
        pb, yb = p > 0.5, y > 0.5
        iou = (pb & yb).sum(dim=(1, 2, 3)).float() / (pb | yb).sum(dim=(1, 2, 3)).clamp(min=1).float()
    conf_l = F.binary_cross_entropy(conf.clamp(1e-6, 1 - 1e-6), iou)
    total = (
        bce
        + cfg.dice_weight * dice_l
        + cfg.layout_weight * (box_l + 0.5 * yaw_l)
        + cfg.confidence_weight * conf_l
    )
    losses = {"bce": bce, "dice": dice_l, "layout": box_l, "yaw": yaw_l, "confidence": conf_l}
    if "teacher" in batch:
        w = batch["teacher_weight"]
        per = F.binary_cross_entropy_with_logits(logits, batch["teacher"], reduction="none").mean(
            dim=(1, 2, 3)
        )
        distill = (per * w).sum() / w.sum().clamp(min=1.0)
        total = total + cfg.distill_weight * distill
        losses["distill"] = distill
    losses["total"] = total
    losses["iou"] = iou.mean()
    return losses


def compute_layout_losses(layout: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ``layout_only`` run's loss terms: ``layout`` (box), ``yaw`` and ``total`` = box +
    0.5 yaw (the layout term of :func:`compute_losses` without its weight), plus
    ``centre_err`` (mean centre error in cube sides, rows with a box; no grad)."""
    box_l, yaw_l = _layout_losses(layout, batch)
    with torch.no_grad():
        m = batch["layout_mask"][:, 0]
        err = (layout[:, :3] - batch["layout"][:, :3]).norm(dim=1)
        centre_err = (err * m).sum() / m.sum().clamp(min=1.0)
    return {"layout": box_l, "yaw": yaw_l, "total": box_l + 0.5 * yaw_l, "centre_err": centre_err}


def batch_losses(model: GeometryLayoutNet, batch: dict[str, Tensor], cfg: TrainConfig) -> dict[str, Tensor]:
    """One forward pass of ``model`` on ``batch`` and its loss terms (:func:`compute_losses`,
    or :func:`compute_layout_losses` for a ``layout_only`` run)."""
    if cfg.layout_only:
        return compute_layout_losses(model.layout_forward(batch["inputs"])[0], batch)
    return compute_losses(model(batch["inputs"]), batch, cfg)


def _to_tensors(b: dict[str, np.ndarray]) -> dict[str, Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}


@torch.no_grad()
def validate(model: GeometryLayoutNet, ds: ArrayDataset, cfg: TrainConfig) -> dict[str, float]:
    """Mean loss terms over a dataset (eval mode), plus ``centre_err`` (normalised units)."""
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for i in range(0, len(ds), cfg.batch_size):
        idx = np.arange(i, min(i + cfg.batch_size, len(ds)))
        batch = _to_tensors(ds.batch(idx))
        if cfg.layout_only:
            losses = batch_losses(model, batch, cfg)
        else:
            out = model(batch["inputs"])
            losses = compute_losses(out, batch, cfg)
            losses["centre_err"] = (out[1][:, :3] - batch["layout"][:, :3]).norm(dim=1).mean()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
        n += len(idx)
    return {k: v / max(n, 1) for k, v in sums.items()}


def draw_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training/validation curves as a PNG (Pillow only): total loss (train, val) and val
    IoU per epoch (a layout-only run: the val centre error), each panel scaled to its own
    range."""
    from PIL import Image, ImageDraw

    w, h, pad = 900, 360, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    panels = [
        ("loss (train red, val blue)", [("train_total", (200, 40, 40)), ("val_total", (40, 40, 200))]),
        ("val voxel IoU@0.5", [("val_iou", (40, 140, 40))])
        if any("val_iou" in e for e in history)
        else ("val centre error (cube sides)", [("val_centre_err", (40, 140, 40))]),
    ]
    pw = (w - pad * 3) // 2
    for pi, (title, series) in enumerate(panels):
        x0 = pad + pi * (pw + pad)
        y0, y1 = pad, h - pad
        d.rectangle([x0, y0, x0 + pw, y1], outline="black")
        d.text((x0 + 4, 8), title, fill="black")
        vals = [float(e[k]) for k, _ in series for e in history if k in e and math.isfinite(float(e[k]))]
        if not vals or not history:
            continue
        lo, hi = min(vals), max(vals)
        if hi - lo < 1e-9:
            hi = lo + 1e-9
        d.text((x0 + 4, y1 + 4), f"epochs 1..{len(history)}  range {lo:.4g}..{hi:.4g}", fill="black")
        for key, col in series:
            pts = [
                (
                    x0 + (pw * (i + 0.5) / len(history)),
                    y1 - (y1 - y0) * (float(e[key]) - lo) / (hi - lo),
                )
                for i, e in enumerate(history)
                if key in e
            ]
            if len(pts) > 1:
                d.line(pts, fill=col, width=2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
    img.save(path)


def _set_seed(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _save_checkpoint(
    path: Path,
    model: GeometryLayoutNet,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
    history: list[dict[str, Any]],
    epoch: int,
    step: int,
    cfg: TrainConfig,
    train_s: float,
) -> None:
    """Everything needed to resume: ``epoch`` completed epochs plus ``step`` steps of the next."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": gen.get_state(),
            "numpy_rng": np.random.get_state(),
            "history": history,
            "epoch": epoch,
            "step": step,
            "config": asdict(cfg),
            "train_s": train_s,
        },
        tmp,
    )
    tmp.replace(path)


def _build_datasets(
    cfg: TrainConfig, cache: Path, progress: bool
) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """Build (or find in ``cache``) the train and val datasets of ``cfg``: their
    directories and metadata by split."""
    stage1 = Path(cfg.stage1_onnx) if cfg.stage1_onnx else None
    dirs: dict[str, Path] = {}
    metas: dict[str, dict[str, Any]] = {}
    for split, frames in (("train", cfg.train_frames), ("val", cfg.val_frames)):
        dirs[split] = dataset_dir(cache, cfg.source, split, frames, cfg.seed, cfg.stage1_sha256)
        with progress_bar(enabled=progress, total=frames, desc=f"dataset {split}", unit="frame") as bar:

            def frames_done(done: int, _total: int, bar: Any = bar) -> None:
                bar.update(done - bar.n)

            metas[split] = build_dataset(
                dirs[split],
                split,
                frames,
                source=cfg.source,
                seed=cfg.seed,
                workers=cfg.data_workers,
                stage1=stage1,
                progress=frames_done,
            )
    return dirs, metas


def _restore(
    ckpt_path: Path, cfg: TrainConfig, model: Any, opt: Any, sched: Any, gen: torch.Generator
) -> tuple[list[dict[str, Any]], int, int, float]:
    """Load a checkpoint into the model, optimiser, schedule and random generators:
    ``(history, epoch, step within it, training seconds so far)``.

    Raises:
        TrainError: the checkpoint is unreadable or was made with another recipe.
    """
    try:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as err:
        raise TrainError(f"cannot read checkpoint {ckpt_path}: {err}") from err
    # a field added to the recipe after the checkpoint was made has its default there
    saved = {**asdict(TrainConfig()), **ck["config"]}
    if _recipe(saved) != _recipe(asdict(cfg)):
        raise TrainError(f"checkpoint {ckpt_path} was made with another recipe: {ck['config']}")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    gen.set_state(ck["generator"])
    np.random.set_state(ck["numpy_rng"])
    epoch = int(ck["epoch"])
    logger.info("resumed from %s at epoch %d", ckpt_path, epoch)
    return ck["history"], epoch, int(ck.get("step", 0)), float(ck.get("train_s", 0.0))


def _train_steps(
    model: Any,
    opt: Any,
    sched: Any,
    gen: torch.Generator,
    train_ds: Any,
    perm: NDArray[np.int64],
    steps: range,
    cfg: TrainConfig,
    deadline: float,
    bar: Any,
) -> tuple[dict[str, float], int, bool]:
    """The optimiser steps ``steps`` of one epoch over the rows ``perm``: the summed
    losses, the steps done (the index after the last one) and whether the time budget
    (``deadline``, epoch seconds) stopped it."""
    sums: dict[str, float] = {}
    done = steps.start
    for s in steps:
        if time.time() > deadline:
            return sums, done, True
        idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
        if len(idx) == 0:
            continue
        batch = _augment(_to_tensors(train_ds.batch(idx)), gen)
        losses = batch_losses(model, batch, cfg)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        done = s + 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.update()
        bar.set_postfix(
            loss=f"{values['total']:.4f}",
            iou=f"{values.get('iou', math.nan):.3f}",
            lr=f"{sched.get_last_lr()[0]:.2e}",
            refresh=False,
        )
    return sums, done, False


def train(
    cfg: TrainConfig,
    run_dir: Path,
    cache_dir: Path | None = None,
    resume: bool = True,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Build/load the datasets and train (resuming from ``run_dir/checkpoint.pt`` when
    ``resume``). Stops after ``cfg.epochs`` or ``cfg.max_minutes`` of this call's wall time
    (a later call resumes). With ``progress``, bars over the dataset frames and each epoch's
    steps are drawn on stderr when it is a terminal (the per-epoch summary is logged either
    way). Returns the ``run.json`` record."""
    cache = cache_dir or default_cache_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    t_start = time.time()
    dirs, metas = _build_datasets(cfg, cache, progress)
    train_dir, val_dir = dirs["train"], dirs["val"]
    train_meta, val_meta = metas["train"], metas["val"]
    data_s = time.time() - t_start
    train_ds = load_dataset(train_dir)
    val_ds = load_dataset(val_dir)
    logger.info("train %d objects, val %d objects", len(train_ds), len(val_ds))

    gen = _set_seed(cfg.seed)
    model = build_model(cfg.model)
    if cfg.init_weights:
        init = load_weights(Path(cfg.init_weights))
        if init.cfg != model.cfg:
            raise TrainError(f"--init-weights {cfg.init_weights}: model config {init.cfg} is not {model.cfg}")
        model.load_state_dict(init.state_dict())
        logger.info("initialised from %s", cfg.init_weights)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch_index = epoch_rows(train_ds, cfg.low_visibility_repeat)
    steps_per_epoch = math.ceil(len(epoch_index) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    ckpt_path = run_dir / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    epoch0, step0, prior_train_s = 0, 0, 0.0
    if resume and ckpt_path.is_file():
        history, epoch0, step0, prior_train_s = _restore(ckpt_path, cfg, model, opt, sched, gen)

    best = min((e["val_total"] for e in history), default=math.inf)
    t_train = time.time()
    stopped_early = False
    deadline = t_start + cfg.max_minutes * 60.0
    last_epoch = min(cfg.epochs, cfg.stop_after_epochs) if cfg.stop_after_epochs > 0 else cfg.epochs
    for epoch in range(epoch0, last_epoch):
        model.train()
        perm = epoch_index[np.random.default_rng(cfg.seed * 1000 + epoch).permutation(len(epoch_index))]
        t_ep = time.time()
        first = step0 if epoch == epoch0 else 0
        with progress_bar(
            enabled=progress,
            total=steps_per_epoch,
            initial=first,
            desc=f"epoch {epoch + 1}/{last_epoch}",
            unit="step",
            leave=False,
        ) as bar:
            sums, done, stopped_early = _train_steps(
                model, opt, sched, gen, train_ds, perm, range(first, steps_per_epoch), cfg, deadline, bar
            )
        if stopped_early:
            logger.warning(
                "time budget of %.1f min reached at epoch %d step %d/%d; run again to resume",
                cfg.max_minutes,
                epoch + 1,
                done,
                steps_per_epoch,
            )
            _save_checkpoint(
                ckpt_path,
                model,
                opt,
                sched,
                gen,
                history,
                epoch,
                done,
                cfg,
                prior_train_s + time.time() - t_train,
            )
            break
        val = validate(model, val_ds, cfg)
        entry = {"epoch": epoch + 1, "epoch_s": round(time.time() - t_ep, 1)}
        entry.update({f"train_{k}": v / max(done - first, 1) for k, v in sums.items()})
        entry.update({f"val_{k}": v for k, v in val.items()})
        history.append(entry)
        logger.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in entry.items()})
        if val["total"] < best:
            best = val["total"]
            torch.save(
                {"model": model.state_dict(), "model_config": cfg.model, "epoch": epoch + 1},
                run_dir / "best.pt",
            )
        _save_checkpoint(
            ckpt_path,
            model,
            opt,
            sched,
            gen,
            history,
            epoch + 1,
            0,
            cfg,
            prior_train_s + time.time() - t_train,
        )
        (run_dir / "history.json").write_text(json.dumps(history, indent=1))
        draw_curves(history, run_dir / "curves.png")
    torch.save(
        {"model": model.state_dict(), "model_config": cfg.model, "epoch": len(history)}, run_dir / "final.pt"
    )
    record = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "config": asdict(cfg),
        "run_dir": str(run_dir),
        "train_data": {"dir": str(train_dir), **train_meta},
        "val_data": {"dir": str(val_dir), **val_meta},
        "epochs_done": len(history),
        "stopped_by_time_budget": stopped_early,
        "complete": not stopped_early and len(history) >= cfg.epochs,
        "stopped_after_epochs": cfg.stop_after_epochs if 0 < cfg.stop_after_epochs < cfg.epochs else None,
        "data_s": round(data_s, 1),
        "train_s": round(prior_train_s + time.time() - t_train, 1),
        "wall_s_this_call": round(time.time() - t_start, 1),
        "final_val": history[-1] if history else {},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": cfg.threads,
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))
    return record


def load_weights(path: Path) -> GeometryLayoutNet:
    """A network (eval mode) from ``best.pt``/``final.pt``/a shipped ``.pt`` state file."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(ck["model_config"])
        model.load_state_dict(ck["model"])
    except (OSError, RuntimeError, KeyError) as err:
        raise TrainError(f"cannot load weights from {path}: {err}") from err
    return model.eval()

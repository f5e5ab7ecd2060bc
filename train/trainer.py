"""The training loop: SAMEO decoder fine-tuning or full training, one process or DDP.

Files a run writes in ``cfg.out`` (all atomically):

* ``config.yaml`` — the resolved configuration;
* ``metrics.csv`` / ``curves.png`` — one row per epoch: loss parts, learning rate,
  speed, validation figures (``train.validate``);
* ``last.pt`` / ``best.pt`` — edge-sameo checkpoints (``edge_sameo.checkpoint``
  format, modal decoder included) after every epoch / at the best validation score
  (``val_inst_mIoU_occluded`` for an amodal target, ``val_inst_mIoU`` for a visible
  one; the lowest training loss without a validation set);
* ``state.pt`` — everything ``--resume`` needs: weights, optimizer, scheduler, the
  epoch and step reached, the partial epoch's sums and the rows so far. Written at
  every epoch end and every ``save_every`` steps; batches are a pure function of
  (seed, epoch, slot), so a resumed run continues with exactly the batches the
  killed one would have seen;
* ``summary.json`` — written last: the run is complete.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import BatchSampler, DistributedSampler

from edge_sameo.build import build_model
from edge_sameo.checkpoint import load_model, read_checkpoint, save_model
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_bytes, atomic_write_json
from edge_sameo.modeling import EfficientSam
from edge_sameo.preprocess import normalize_resized
from edge_sameo.train import metrics as metrics_io
from edge_sameo.train.cache import EmbeddingCache, get_or_build
from edge_sameo.train.config import TrainConfig
from edge_sameo.train.data import PreparedSet, prepare_dataset
from edge_sameo.train.distributed import DistContext, init_distributed, shutdown
from edge_sameo.train.losses import LossWeights, sameo_loss
from edge_sameo.train.sampling import Batch, epoch_picks, log_proportional, make_batch
from edge_sameo.train.validate import validate

STATE_FILE = "state.pt"
SUMMARY_FILE = "summary.json"
#: Config fields that may change when resuming (they do not change the numbers).
_T = TypeVar("_T")

RESUMABLE_CHANGES = ("progress", "threads", "save_every", "cache_dir", "val_max_images")


# --------------------------------------------------------------------------- model


def initial_model(cfg: TrainConfig) -> EfficientSam:
    """The model a run starts from: ``init`` (any loadable checkpoint) or a seeded
    random model of ``cfg.model``; for an amodal target with ``keep_modal`` the
    starting decoder is also kept, frozen, as ``modal_decoder``."""
    if cfg.init is not None:
        model = load_model(cfg.init, base=cfg.base)
    else:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model_config())
    if cfg.target == "amodal" and cfg.keep_modal and model.modal_decoder is None:
        model.modal_decoder = copy.deepcopy(model.mask_decoder)
    return model


def set_trainable(model: EfficientSam, cfg: TrainConfig) -> list[nn.Parameter]:
    """Freeze everything but ``mask_decoder`` (and, in full mode, the encoders)."""
    for p in model.parameters():
        p.requires_grad_(False)
    parts: list[nn.Module] = [model.mask_decoder]
    if cfg.trains_encoder:
        parts += [model.image_encoder, model.prompt_encoder]
    params: list[nn.Parameter] = []
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


class TrainStep(nn.Module):
    """One forward pass as a module (what DDP wraps): pixels or embeddings + prompts ->
    per-instance (total, dice, focal, iou_l1, true_iou), each (N,)."""

    def __init__(
        self, model: EfficientSam, weights: LossWeights, upsample: str = "bicubic"
    ) -> None:
        super().__init__()
        self.model = model
        self.weights = weights
        self.upsample = upsample

    def forward(
        self,
        source: torch.Tensor,
        inst_image: torch.Tensor,
        boxes: torch.Tensor,
        targets: torch.Tensor,
        encode: bool,
    ) -> tuple[torch.Tensor, ...]:
        if encode:
            emb = self.model.encode(normalize_resized(source, self.model.img_size))
        else:
            emb = source
        logits, iou = self.model.decode_boxes(emb[inst_image], boxes, True, "mask")
        out = sameo_loss(logits, iou, targets, self.weights, self.upsample)
        return out.total, out.dice, out.focal, out.iou, out.true_iou


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def train_step(
    step_module: nn.Module,
    model: EfficientSam,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    params: Sequence[nn.Parameter],
    batch: Batch,
    source: torch.Tensor,
    pixels: bool,
    cfg: TrainConfig,
) -> torch.Tensor:
    """One optimisation step on ``source`` — pixels (``pixels``) or embeddings — returning
    the local weighted sums (loss, dice, focal, iou_l1, true IoU, amodal-prompt share)."""
    device = source.device
    encode = pixels
    if pixels and not cfg.trains_encoder:
        # Frozen encoder without the cache: encode every step (what the cache saves).
        with torch.no_grad():
            source = model.encode(normalize_resized(source, model.img_size))
        encode = False
    w = batch.weights.to(device)
    total, dice, focal, iou_l1, true_iou = step_module(
        source,
        batch.inst_image.to(device),
        batch.boxes.to(device),
        batch.targets.to(device),
        encode,
    )
    loss = (total * w).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    sched.step()
    with torch.no_grad():
        return torch.stack(
            [
                loss.detach(),
                (dice * w).sum(),
                (focal * w).sum(),
                (iou_l1 * w).sum(),
                (true_iou * w).sum(),
                (batch.amodal_prompt.to(device).float() * w).sum(),
            ]
        )


# --------------------------------------------------------------------------- state


@dataclass
class RunState:
    epoch: int = 0
    step: int = 0
    sums: list[float] | None = None
    rows: list[dict[str, Any]] | None = None
    best: float | None = None
    elapsed: float = 0.0


def _save_state(
    path: Path,
    model: EfficientSam,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    state: RunState,
    cfg: TrainConfig,
) -> None:
    obj = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "sums": list(state.sums or []),
        "rows": json.loads(json.dumps(state.rows or [])),
        "best": state.best,
        "elapsed": state.elapsed,
        "config": cfg.to_dict(),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    diff = [
        k
        for k in sorted(set(saved) | set(now))
        if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)
    ]
    if diff:
        raise InputError(
            f"--resume: the configuration differs from the interrupted run's in: "
            f"{', '.join(diff)} (start a new run in another --out to change them)"
        )


# --------------------------------------------------------------------------- loop


def _gather(
    sets: Sequence[PreparedSet],
    caches: Sequence[EmbeddingCache] | None,
    batch: Batch,
) -> torch.Tensor:
    """(B, 3, S, S) pixels, or (B, C, h, w) cached embeddings, of the batch's images."""
    rows = []
    for k, i in zip(batch.dataset, batch.image, strict=True):
        if caches is not None:
            rows.append(caches[int(k)].get([int(i)]))
        else:
            rows.append(sets[int(k)].pixels_tensor([int(i)]))
    return torch.cat(rows)


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but CUDA is not available")
    return torch.device(cfg.device)


def _tqdm(enabled: bool, **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(disable=not enabled, dynamic_ncols=True, **kwargs)


def prepare_sets(
    cfg: TrainConfig, model: EfficientSam, ctx: DistContext
) -> tuple[list[PreparedSet], PreparedSet | None]:
    """Prepared training sets and the validation set (built by rank 0 first)."""
    mask_size = model.config.low_res_size * cfg.loss_scale
    specs = list(cfg.train) + ([cfg.val] if cfg.val is not None else [])

    def build() -> list[PreparedSet]:
        built = []
        for spec in specs:
            bar = _tqdm(cfg.progress and ctx.is_main, desc=f"prepare {spec.name}", unit="img")
            with bar:
                built.append(
                    prepare_dataset(
                        spec, model.img_size, mask_size, cfg.resolved_cache_dir, bar.update
                    )
                )
        return built

    out = _main_rank_first(ctx, build)
    val = out[-1] if cfg.val is not None else None
    return out[: len(cfg.train)], val


def embedding_caches(
    cfg: TrainConfig,
    model: EfficientSam,
    sets: Sequence[PreparedSet],
    ctx: DistContext,
    device: torch.device,
) -> list[EmbeddingCache]:
    """One cache per prepared set, computed by rank 0 while the others wait."""

    def build() -> list[EmbeddingCache]:
        caches = []
        for ps in sets:
            bar = _tqdm(cfg.progress and ctx.is_main, desc=f"embed {ps.name}", unit="img")
            with bar:
                caches.append(
                    get_or_build(
                        model,
                        ps,
                        cfg.resolved_cache_dir,
                        cfg.cache_dtype,
                        device=device,
                        progress=bar.update,
                    )
                )
        return caches

    return _main_rank_first(ctx, build)


def _main_rank_first(ctx: DistContext, build: Callable[[], _T]) -> _T:
    """Run ``build`` on the main rank, then (after a barrier) on the others: files it
    writes (prepared sets, caches) are then only read by the other ranks."""
    result: _T | None = None
    for turn in (0, 1):
        if (turn == 0) == ctx.is_main:
            result = build()
        ctx.barrier()
    assert result is not None
    return result


def fit(cfg: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the summary (also written to ``summary.json``).

    Under ``torchrun`` every rank calls this; rank 0 writes the files.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg)
    ctx = init_distributed(device.type)
    try:
        return _fit(cfg, resume, ctx, device)
    finally:
        shutdown(ctx)


def _fit(cfg: TrainConfig, resume: bool, ctx: DistContext, device: torch.device) -> dict[str, Any]:
    out = cfg.out
    state_path = out / STATE_FILE
    if cfg.batch_size % ctx.world_size:
        raise InputError(
            f"batch_size {cfg.batch_size} must be a multiple of the {ctx.world_size} processes"
        )
    saved: dict[str, Any] | None = None
    if state_path.is_file():
        if not resume:
            raise InputError(
                f"{out} already holds a run ({STATE_FILE}); pass --resume to continue it "
                "or choose another --out"
            )
        saved = read_checkpoint(state_path)
        assert saved is not None
        _check_resumable(saved["config"], cfg)
        if (out / SUMMARY_FILE).is_file() and saved["epoch"] >= cfg.epochs:
            summary: dict[str, Any] = json.loads((out / SUMMARY_FILE).read_text())
            return summary
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "config.yaml", yaml.safe_dump(cfg.to_dict()).encode())

    model = initial_model(cfg)
    if saved is not None:
        model.load_state_dict(saved["model"])
    model.to(device)
    params = set_trainable(model, cfg)
    sets, val_set = prepare_sets(cfg, model, ctx)
    caches = embedding_caches(cfg, model, sets, ctx, device) if cfg.uses_cache else None
    val_cache = None
    if val_set is not None and not cfg.trains_encoder and cfg.cache and ctx.is_main:
        val_cache = get_or_build(
            model, val_set, cfg.resolved_cache_dir, cfg.cache_dtype, device=device
        )
    val_source = val_set.load_source() if val_set is not None and ctx.is_main else None

    sizes = [ps.num_images for ps in sets]
    probs = log_proportional(sizes, [spec.weight for spec in cfg.train])
    steps = cfg.steps_per_epoch or max(1, sum(sizes) // cfg.batch_size)
    total_steps = steps * cfg.epochs
    step_module: nn.Module = TrainStep(
        model,
        LossWeights(
            cfg.dice_weight, cfg.focal_weight, cfg.iou_weight, cfg.focal_gamma, cfg.focal_alpha
        ),
        cfg.loss_upsample,
    )
    if ctx.enabled:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[ctx.local_rank] if device.type == "cuda" else None
        )
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
    )
    state = RunState(rows=[])
    if saved is not None:
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = RunState(
            epoch=int(saved["epoch"]),
            step=int(saved["step"]),
            sums=[float(x) for x in saved["sums"]] or None,
            rows=list(saved["rows"]),
            best=saved["best"],
            elapsed=float(saved["elapsed"]),
        )
    local = cfg.batch_size // ctx.world_size
    n_sums = 6
    run_start = time.perf_counter() - state.elapsed

    for epoch in range(state.epoch, cfg.epochs):
        picks = epoch_picks(sizes, probs, steps * cfg.batch_size, cfg.seed, epoch)
        sampler: DistributedSampler[int] = DistributedSampler(
            range(steps * cfg.batch_size),  # type: ignore[arg-type]
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=False,
        )
        batches = list(BatchSampler(sampler, local, drop_last=True))
        resumed = state.sums if state.sums and ctx.is_main else [0.0] * n_sums
        sums = torch.tensor(resumed, dtype=torch.float64)
        step_module.train()
        t_epoch = time.perf_counter()
        first_step = state.step
        bar = _tqdm(
            cfg.progress and ctx.is_main,
            total=steps,
            initial=first_step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
        )
        with bar:
            for step in range(first_step, steps):
                slots = np.asarray(batches[step], np.int64)
                batch = make_batch(sets, picks[slots], slots, cfg, epoch)
                source = _gather(sets, caches, batch).to(device)
                parts = train_step(
                    step_module, model, opt, sched, params, batch, source, caches is None, cfg
                )
                sums += parts.double().cpu()
                bar.set_postfix(loss=f"{float(parts[0]):.4f}", refresh=False)
                bar.update(1)
                state.step = step + 1
                if cfg.save_every and state.step % cfg.save_every == 0 and state.step < steps:
                    # The ranks' partial sums, summed: rank 0 resumes with them.
                    state.sums = ctx.all_reduce_sum(sums).tolist()
                    state.elapsed = time.perf_counter() - run_start
                    if ctx.is_main:
                        _save_state(state_path, model, opt, sched, state, cfg)
                    ctx.barrier()
        epoch_s = time.perf_counter() - t_epoch
        total_sums = ctx.all_reduce_sum(sums) / (ctx.world_size * steps)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps,
            "lr": opt.param_groups[0]["lr"],
            "loss": float(total_sums[0]),
            "dice": float(total_sums[1]),
            "focal": float(total_sums[2]),
            "iou_l1": float(total_sums[3]),
            "train_iou": float(total_sums[4]),
            "amodal_prompt_frac": float(total_sums[5]),
            "steps_per_s": (steps - first_step) / max(epoch_s, 1e-9),
        }
        if ctx.is_main:
            if (
                val_set is not None
                and val_source is not None
                and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs)
            ):
                t_val = time.perf_counter()
                figures = validate(
                    model,
                    val_set,
                    val_source,
                    cfg.val_prompt,
                    cfg.target,
                    val_cache,
                    cfg.val_max_images,
                    device,
                )
                row.update({f"val_{k}": v for k, v in figures.items()})
                row["val_s"] = time.perf_counter() - t_val
            row["elapsed_s"] = time.perf_counter() - run_start
            assert state.rows is not None
            state.rows.append(row)
            metrics_io.write_csv(out / "metrics.csv", state.rows)
            metrics_io.plot_curves(out / "curves.png", state.rows, title=str(out))
            score_key = (
                ("val_inst_mIoU_occluded" if cfg.target == "amodal" else "val_inst_mIoU")
                if val_set is not None
                else "loss"
            )
            value = row.get(score_key)
            if value is None and score_key != "loss":
                value = row.get("val_inst_mIoU")
            sign = -1.0 if score_key == "loss" else 1.0
            meta = {"epoch": epoch + 1, "metrics": row, "config": cfg.to_dict()}
            save_model(model, out / "last.pt", meta)
            if value is not None and (state.best is None or sign * value > sign * state.best):
                state.best = float(value)
                save_model(model, out / "best.pt", {**meta, "best": score_key})
        state.epoch, state.step, state.sums = epoch + 1, 0, None
        state.elapsed = time.perf_counter() - run_start
        if ctx.is_main:
            _save_state(state_path, model, opt, sched, state, cfg)
            shown = {k: v for k, v in row.items() if isinstance(v, float) and "[" not in k}
            print(
                f"{out.name} epoch {epoch + 1}/{cfg.epochs}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()),
                flush=True,
            )
        ctx.barrier()

    summary = {
        "out": str(out),
        "epochs": cfg.epochs,
        "steps_per_epoch": steps,
        "world_size": ctx.world_size,
        "elapsed_s": state.elapsed,
        "best": state.best,
        "final": (state.rows or [{}])[-1],
        "datasets": {
            ps.name: {"images": ps.num_images, "instances": ps.num_instances, "p": float(p)}
            for ps, p in zip(sets, probs, strict=True)
        },
    }
    if ctx.is_main:
        atomic_write_json(out / SUMMARY_FILE, summary)
    return summary

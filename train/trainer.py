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
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml
from numpy.typing import NDArray
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
RESUMABLE_CHANGES = ("progress", "threads", "save_every", "cache_dir", "val_max_images")
_T = TypeVar("_T")


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
    this process's instance-weighted sums as a (6,) float32 tensor on the step's device,
    in ``TrainSums`` field order (copied to the host once, by ``TrainSums.from_tensor``)."""
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


@dataclass(frozen=True)
class TrainSums:
    """Instance-weighted sums of what training steps measure, over the steps of an epoch so
    far (one process's until all-reduced). Divided by the number of steps they are the
    epoch's ``metrics.csv`` columns of the same names.

    loss: the weighted total loss; dice, focal, iou_l1: its parts; train_iou: the true IoU
    of the supervised mask with its target; amodal_prompt_frac: the share of instances
    prompted with their amodal box.
    """

    loss: float = 0.0
    dice: float = 0.0
    focal: float = 0.0
    iou_l1: float = 0.0
    train_iou: float = 0.0
    amodal_prompt_frac: float = 0.0

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> TrainSums:
        """From a (6,) tensor in field order (any device and float dtype), read as float64."""
        return cls(*values.detach().double().cpu().tolist())

    def to_tensor(self) -> torch.Tensor:
        """A (6,) float64 CPU tensor in field order (what the ranks all-reduce)."""
        return torch.tensor(astuple(self), dtype=torch.float64)

    def __add__(self, other: TrainSums) -> TrainSums:
        return TrainSums(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def columns(self) -> dict[str, float]:
        """The fields by name, in field order (``metrics.csv`` columns)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class RunState:
    """Where a run stands (``state.pt`` holds it beside weights, optimizer and scheduler).

    epoch, step: the next epoch to train and the next step in it (0-based); sums: the
    partial epoch's sums over all ranks at the last mid-epoch save (None at an epoch
    start); rows: the ``metrics.csv`` rows so far; best: the best score so far; elapsed:
    seconds of training so far, over every session of the run.
    """

    epoch: int = 0
    step: int = 0
    sums: TrainSums | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    elapsed: float = 0.0

    def to_saved(self) -> dict[str, Any]:
        """The ``state.pt`` entries (``sums`` as 6 floats in field order, [] for None)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "sums": list(astuple(self.sums)) if self.sums is not None else [],
            "rows": json.loads(json.dumps(self.rows)),
            "best": self.best,
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> RunState:
        """Read back the entries ``to_saved`` wrote."""
        sums = [float(x) for x in saved["sums"]]
        return cls(
            epoch=int(saved["epoch"]),
            step=int(saved["step"]),
            sums=TrainSums(*sums) if sums else None,
            rows=list(saved["rows"]),
            best=saved["best"],
            elapsed=float(saved["elapsed"]),
        )


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
        **state.to_saved(),
        "config": cfg.to_dict(),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_saved(cfg: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """The contents of ``cfg.out``'s ``state.pt`` when resuming; None for a new run.

    Raises InputError when ``cfg.out`` holds a run and ``resume`` is off, or when the
    configuration differs from the saved run's in more than ``RESUMABLE_CHANGES``.
    """
    state_path = cfg.out / STATE_FILE
    if not state_path.is_file():
        return None
    if not resume:
        raise InputError(
            f"{cfg.out} already holds a run ({STATE_FILE}); pass --resume to continue it "
            "or choose another --out"
        )
    saved = read_checkpoint(state_path)
    assert saved is not None
    _check_resumable(saved["config"], cfg)
    return saved


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
    if cfg.batch_size % ctx.world_size:
        raise InputError(
            f"batch_size {cfg.batch_size} must be a multiple of the {ctx.world_size} processes"
        )
    saved = _load_saved(cfg, resume)
    summary_path = cfg.out / SUMMARY_FILE
    if saved is not None and summary_path.is_file() and saved["epoch"] >= cfg.epochs:
        summary: dict[str, Any] = json.loads(summary_path.read_text())
        return summary  # resuming a finished run
    if ctx.is_main:
        cfg.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cfg.out / "config.yaml", yaml.safe_dump(cfg.to_dict()).encode())
    run = _start_run(cfg, ctx, device, saved)
    for epoch in range(run.state.epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        first_step = run.state.step
        sums = _train_epoch(run, epoch)
        steps_per_s = (run.steps - first_step) / max(time.perf_counter() - t_epoch, 1e-9)
        _end_epoch(run, epoch, sums, steps_per_s)
    return _finish(run)


@dataclass
class _Run:
    """What the epochs of one training run share (``_start_run`` builds it)."""

    cfg: TrainConfig
    ctx: DistContext
    device: torch.device
    model: EfficientSam
    params: list[nn.Parameter]
    #: ``TrainStep``, wrapped in DDP under torchrun.
    step_module: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    sets: list[PreparedSet]
    #: One embedding cache per training set; None when the steps read pixels.
    caches: list[EmbeddingCache] | None
    #: The validation set; its source and embedding cache exist on rank 0 only.
    val_set: PreparedSet | None
    val_source: Any
    val_cache: EmbeddingCache | None
    #: Images per training set and the probability of drawing from each.
    sizes: list[int]
    probs: NDArray[np.float64]
    steps: int
    state: RunState
    #: ``time.perf_counter()`` at the run's start, shifted back by a resumed run's time.
    run_start: float

    def save_state(self) -> None:
        path = self.cfg.out / STATE_FILE
        _save_state(path, self.model, self.opt, self.sched, self.state, self.cfg)


def _start_run(
    cfg: TrainConfig, ctx: DistContext, device: torch.device, saved: dict[str, Any] | None
) -> _Run:
    """Model, data, optimizer and schedule of a new run, or of the run whose ``state.pt``
    contents are ``saved``, continued."""
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
    state = RunState()
    if saved is not None:
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = RunState.from_saved(saved)
    return _Run(
        cfg=cfg,
        ctx=ctx,
        device=device,
        model=model,
        params=params,
        step_module=step_module,
        opt=opt,
        sched=sched,
        sets=sets,
        caches=caches,
        val_set=val_set,
        val_source=val_source,
        val_cache=val_cache,
        sizes=sizes,
        probs=probs,
        steps=steps,
        state=state,
        run_start=time.perf_counter() - state.elapsed,
    )


def _train_epoch(run: _Run, epoch: int) -> TrainSums:
    """Train ``epoch`` from step ``run.state.step`` on, saving ``state.pt`` every
    ``save_every`` steps; returns this process's sums over the epoch (on rank 0 they
    include a resumed run's sums of the steps before ``run.state.step``)."""
    cfg, ctx, state, steps = run.cfg, run.ctx, run.state, run.steps
    picks = epoch_picks(run.sizes, run.probs, steps * cfg.batch_size, cfg.seed, epoch)
    sampler: DistributedSampler[int] = DistributedSampler(
        range(steps * cfg.batch_size),  # type: ignore[arg-type]
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=False,
    )
    batches = list(BatchSampler(sampler, cfg.batch_size // ctx.world_size, drop_last=True))
    sums = state.sums if state.sums is not None and ctx.is_main else TrainSums()
    run.step_module.train()
    bar = _tqdm(
        cfg.progress and ctx.is_main,
        total=steps,
        initial=state.step,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
    )
    with bar:
        for step in range(state.step, steps):
            slots = np.asarray(batches[step], np.int64)
            batch = make_batch(run.sets, picks[slots], slots, cfg, epoch)
            source = _gather(run.sets, run.caches, batch).to(run.device)
            parts = train_step(
                run.step_module,
                run.model,
                run.opt,
                run.sched,
                run.params,
                batch,
                source,
                run.caches is None,
                cfg,
            )
            step_sums = TrainSums.from_tensor(parts)
            sums += step_sums
            bar.set_postfix(loss=f"{step_sums.loss:.4f}", refresh=False)
            bar.update(1)
            state.step = step + 1
            if cfg.save_every and state.step % cfg.save_every == 0 and state.step < steps:
                # The ranks' partial sums, summed: rank 0 resumes with them.
                state.sums = TrainSums.from_tensor(ctx.all_reduce_sum(sums.to_tensor()))
                state.elapsed = time.perf_counter() - run.run_start
                if ctx.is_main:
                    run.save_state()
                ctx.barrier()
    return sums


def _end_epoch(run: _Run, epoch: int, sums: TrainSums, steps_per_s: float) -> None:
    """After ``epoch``: rank 0 validates (every ``val_every`` epochs and after the last),
    adds the epoch's row to ``metrics.csv`` and ``curves.png``, saves ``last.pt`` and, at
    a new best score, ``best.pt``; every rank then records the epoch as done (rank 0 in
    ``state.pt``)."""
    cfg, ctx, state, out = run.cfg, run.ctx, run.state, run.cfg.out
    total = ctx.all_reduce_sum(sums.to_tensor()) / (ctx.world_size * run.steps)
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": (epoch + 1) * run.steps,
        "lr": run.opt.param_groups[0]["lr"],
        **TrainSums.from_tensor(total).columns(),
        "steps_per_s": steps_per_s,
    }
    if ctx.is_main:
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
            _validate_into(run, row)
        row["elapsed_s"] = time.perf_counter() - run.run_start
        state.rows.append(row)
        metrics_io.write_csv(out / "metrics.csv", state.rows)
        metrics_io.plot_curves(out / "curves.png", state.rows, title=str(out))
        _save_models(run, epoch, row)
    state.epoch, state.step, state.sums = epoch + 1, 0, None
    state.elapsed = time.perf_counter() - run.run_start
    if ctx.is_main:
        run.save_state()
        shown = {k: v for k, v in row.items() if isinstance(v, float) and "[" not in k}
        print(
            f"{out.name} epoch {epoch + 1}/{cfg.epochs}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()),
            flush=True,
        )
    ctx.barrier()


def _validate_into(run: _Run, row: dict[str, Any]) -> None:
    """Add the validation figures (``val_*`` columns) and their time (``val_s``) to
    ``row``; nothing without a validation set."""
    if run.val_set is None or run.val_source is None:
        return
    t_val = time.perf_counter()
    figures = validate(
        run.model,
        run.val_set,
        run.val_source,
        run.cfg.val_prompt,
        run.cfg.target,
        run.val_cache,
        run.cfg.val_max_images,
        run.device,
    )
    row.update({f"val_{k}": v for k, v in figures.items()})
    row["val_s"] = time.perf_counter() - t_val


def _score_key(cfg: TrainConfig, validated: bool) -> str:
    """The ``metrics.csv`` column ``best.pt`` maximises (``loss``: minimises)."""
    if not validated:
        return "loss"
    return "val_inst_mIoU_occluded" if cfg.target == "amodal" else "val_inst_mIoU"


def _save_models(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Save ``last.pt``, and ``best.pt`` when ``row`` beats ``run.state.best``."""
    cfg, state, out = run.cfg, run.state, run.cfg.out
    score_key = _score_key(cfg, run.val_set is not None)
    value = row.get(score_key)
    if value is None and score_key != "loss":
        value = row.get("val_inst_mIoU")
    sign = -1.0 if score_key == "loss" else 1.0
    meta = {"epoch": epoch + 1, "metrics": row, "config": cfg.to_dict()}
    save_model(run.model, out / "last.pt", meta)
    if value is not None and (state.best is None or sign * value > sign * state.best):
        state.best = float(value)
        save_model(run.model, out / "best.pt", {**meta, "best": score_key})


def _finish(run: _Run) -> dict[str, Any]:
    """The run's summary; rank 0 writes it to ``summary.json`` (last: the run is complete)."""
    summary = {
        "out": str(run.cfg.out),
        "epochs": run.cfg.epochs,
        "steps_per_epoch": run.steps,
        "world_size": run.ctx.world_size,
        "elapsed_s": run.state.elapsed,
        "best": run.state.best,
        "final": (run.state.rows or [{}])[-1],
        "datasets": {
            ps.name: {"images": ps.num_images, "instances": ps.num_instances, "p": float(p)}
            for ps, p in zip(run.sets, run.probs, strict=True)
        },
    }
    if run.ctx.is_main:
        atomic_write_json(run.cfg.out / SUMMARY_FILE, summary)
    return summary

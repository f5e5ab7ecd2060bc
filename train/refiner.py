"""Training the object-resolution mask refiner (``edge_sameo.modeling.refiner``).

The frozen nano model (encoder, both decoders) runs on **fresh synthetic scenes** (every
occluded scene with its dual, as in SAMEO's dual annotation); per instance a prompt box
(modal or amodal 50:50, detector-like jitter) gives the decoders' coarse logits, the
refiner window and its inputs — through ``edge_sameo.refine``, the code the app runs —
and the amodal and visible targets resampled into the same window.

Two processes share the work on a 2-core machine: ``gen`` writes shards of samples
(``shard_*.npz``) while ``fit`` trains on the newest shards it finds, so data never
repeats for long; ``fit`` has a wall-clock budget with a cosine learning rate over it,
resumes from its ``state.pt`` and logs a learning curve (``curve.csv``) on a fixed
validation shard.

    python -m edge_sameo.train.refiner gen --out runs/ref/shards --seed 2000 --shards 200
    python -m edge_sameo.train.refiner gen --out runs/ref/val --seed 2100 --shards 1 --scenes 150
    python -m edge_sameo.train.refiner fit --shards runs/ref/shards --val runs/ref/val \
        --minutes 60 \
        --out runs/ref/fit
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from edge_sameo import bundled
from edge_sameo.data.synth import SynthConfig, compose_scene, dual_scenes, item_seed, render
from edge_sameo.modeling import EfficientSam
from edge_sameo.modeling.refiner import MaskRefiner, RefinerConfig
from edge_sameo.preprocess import normalize_resized, resize_pixels
from edge_sameo.refine import crop_masks, refiner_crops
from edge_sameo.train.sampling import jitter_boxes

#: Instances with fewer visible pixels are prompted with their amodal box.
MIN_VISIBLE = 16
BOX_JITTER, BOX_JITTER_MAX = 0.05, 0.15


@dataclass
class Samples:
    """Refiner samples: inputs (n, 6, R, R) float16 (RGB, box, amodal and visible logits),
    targets (n, 2, R, R) uint8 (amodal, visible; 255 = inside), occlusion (n,) float32,
    amodal_prompt (n,) bool."""

    inputs: NDArray[np.float16]
    targets: NDArray[np.uint8]
    occlusion: NDArray[np.float32]
    amodal_prompt: NDArray[np.bool_]

    @staticmethod
    def concat(parts: list[Samples]) -> Samples:
        """The samples of ``parts`` one after another."""
        return Samples(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in Samples.__annotations__)
        )

    def save(self, path: Path) -> None:
        """Write the samples as an ``.npz`` at ``path`` (via a temporary file, atomically)."""
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f: getattr(self, f) for f in Samples.__annotations__})
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> Samples:
        """Read samples written by :meth:`save`."""
        with np.load(path) as z:
            return Samples(*(z[f] for f in Samples.__annotations__))


@torch.no_grad()
def coarse_logits(
    model: EfficientSam, image: NDArray[np.uint8], prompts: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Both decoders' best-candidate (N, L, L) low-res logits for (N, 4) image-pixel boxes,
    chosen by predicted IoU as the app chooses them."""
    h, w = image.shape[:2]
    s = model.img_size
    pixels = torch.from_numpy(resize_pixels(image, s))
    emb = model.encode(normalize_resized(pixels, s))
    scale = torch.tensor([s / w, s / h, s / w, s / h])
    boxes = torch.from_numpy(prompts) * scale
    out = []
    for head in ("mask", "modal"):
        logits, iou = model.decode_boxes(emb, boxes, True, head)
        best = iou.argmax(dim=1)
        out.append(logits[torch.arange(len(best)), best].numpy())
    return out[0], out[1]


def scene_samples(
    model: EfficientSam,
    image: NDArray[np.uint8],
    amodal: NDArray[np.bool_],
    visible: NDArray[np.bool_],
    rng: np.random.Generator,
    cfg: RefinerConfig,
    amodal_prob: float = 0.5,
) -> Samples:
    """Samples of one image: (n, H, W) amodal and visible ground-truth masks."""
    n = len(amodal)
    h, w = image.shape[:2]
    vis_area = visible.reshape(n, -1).sum(1)
    amo_area = np.maximum(amodal.reshape(n, -1).sum(1), 1)
    use_amodal = (rng.random(n) < amodal_prob) | (vis_area < MIN_VISIBLE)
    src = np.where(use_amodal[:, None, None], amodal, visible)
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        ys, xs = np.nonzero(src[i])
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    # jitter in a square frame (jitter_boxes clips to one side), then back to pixels
    unit = np.array([1000 / w, 1000 / h, 1000 / w, 1000 / h], np.float32)
    boxes = jitter_boxes(boxes * unit, rng, BOX_JITTER, BOX_JITTER_MAX, 1000) / unit
    amodal_lr, visible_lr = coarse_logits(model, image, boxes)
    # samples keep every channel; fit reads the first ones its refiner takes
    full = RefinerConfig(cfg.crop, cfg.widths, True, cfg.grow, occluders=cfg.occluders)
    windows, inputs = refiner_crops(image, boxes, full, amodal_lr, visible_lr)
    targets = np.stack(
        [crop_masks(amodal, windows, cfg.crop), crop_masks(visible, windows, cfg.crop)], 1
    )
    return Samples(
        inputs=inputs.astype(np.float16),
        targets=np.round(targets * 255).astype(np.uint8),
        occlusion=(1.0 - vis_area / amo_area).astype(np.float32),
        amodal_prompt=use_amodal,
    )


def world_images(
    seed: int, start: int, stop: int, synth: SynthConfig
) -> Iterator[tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.bool_]]]:
    """Every image (scenes and their duals) of scenes ``start:stop``: image and (n, H, W)
    amodal / visible masks of its non-empty instances."""
    for i in range(start, stop):
        layout = compose_scene(item_seed(seed, i), synth)
        scene = render(layout)
        for sc in [scene] + [d for d, _ in dual_scenes(layout, scene, synth)]:
            inst = [x for x in sc.instances if x.amodal.any()]
            if inst:
                yield (
                    sc.image,
                    np.stack([x.amodal for x in inst]),
                    np.stack([x.visible for x in inst]),
                )


def generate(args: argparse.Namespace) -> None:
    """``gen``: write ``--shards`` shards ``shard_{k:05d}.npz`` of samples into ``--out``,
    ``--scenes`` scenes each; a shard that exists is skipped."""
    from tqdm import tqdm

    from edge_sameo.checkpoint import load_model

    torch.set_num_threads(1)
    model = load_model(args.nano).eval()
    cfg = RefinerConfig(crop=args.crop, grow=args.grow, occluders=args.occluders)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    synth = SynthConfig(pillars=args.pillars, free_shapes=args.free_shapes)
    for k in tqdm(range(args.first, args.first + args.shards), desc="shards", unit="shard"):
        path = out / f"shard_{k:05d}.npz"
        if path.exists():
            continue
        rng = np.random.default_rng([args.seed, k, 0x5EF])
        start = k * args.scenes
        parts = [
            scene_samples(model, img, a, v, rng, cfg)
            for img, a, v in world_images(args.seed, start, start + args.scenes, synth)
        ]
        Samples.concat(parts).save(path)


# --------------------------------------------------------------------------- fit


def refiner_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE + Dice per channel (amodal weighted 1, visible 0.5), mean over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((2, 3))
    p = torch.sigmoid(logits)
    inter = (p * targets).sum((2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((2, 3)) + targets.sum((2, 3)) + 1)
    per = bce + dice
    return (per[:, 0] + 0.5 * per[:, 1]).mean()


def batch_tensors(s: Samples, idx: NDArray[np.int64], cfg: RefinerConfig) -> tuple[Any, Any]:
    """Training tensors of samples ``idx``: inputs (B, C, R, R) float32 with C =
    ``cfg.in_channels`` and targets (B, 2, R, R) float32 in [0, 1] (amodal, visible)."""
    x = torch.from_numpy(s.inputs[idx, : cfg.in_channels].astype(np.float32))
    y = torch.from_numpy(s.targets[idx].astype(np.float32) / 255.0)
    return x, y


def augment_batch(
    x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stronger augmentation for ``fit --augment`` (in place on a batch from
    :func:`batch_tensors`): every sample is turned by one of the square's eight symmetries
    (inputs and targets alike), and its RGB channels (ImageNet-normalised) get a random
    channel order, per-channel gain, contrast, brightness, occasionally grey, and noise, so
    that the refiner leans less on the colours and textures of the world it trains on."""
    from edge_sameo.modeling.efficient_sam import PIXEL_MEAN, PIXEL_STD

    n = len(x)
    for i, k in enumerate(rng.integers(0, 8, n)):
        if k:
            xi, yi = x[i], y[i]
            if k & 4:
                xi, yi = xi.transpose(-1, -2), yi.transpose(-1, -2)
            xi, yi = torch.rot90(xi, int(k & 3), (-2, -1)), torch.rot90(yi, int(k & 3), (-2, -1))
            x[i], y[i] = xi, yi
    mean = 255.0 * torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = 255.0 * torch.tensor(PIXEL_STD, dtype=torch.float32).view(1, 3, 1, 1)
    rgb = x[:, :3] * std + mean
    perm = torch.from_numpy(np.stack([rng.permutation(3) for _ in range(n)]))
    rgb = torch.gather(rgb, 1, perm[:, :, None, None].expand_as(rgb))
    f32 = np.float32
    gain = torch.from_numpy(rng.uniform(0.8, 1.2, (n, 3, 1, 1)).astype(f32))
    contrast = torch.from_numpy(rng.uniform(0.6, 1.4, (n, 1, 1, 1)).astype(f32))
    bright = torch.from_numpy(rng.uniform(-40, 40, (n, 1, 1, 1)).astype(f32))
    centre = rgb.mean((1, 2, 3), keepdim=True)
    rgb = (rgb * gain - centre) * contrast + centre + bright
    grey = torch.from_numpy(rng.random(n) < 0.1)
    rgb[grey] = rgb[grey].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    sigma = torch.from_numpy(rng.uniform(0, 8, (n, 1, 1, 1)).astype(f32))
    rgb = rgb + sigma * torch.randn(
        rgb.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))
    )
    x[:, :3] = (rgb.clamp(0, 255) - mean) / std
    return x, y


def mask_ious(pred: NDArray[np.bool_], target: NDArray[np.bool_]) -> NDArray[np.float64]:
    """IoU per mask of (n, R, R) predicted and target masks (an empty union counts 0)."""
    inter = (pred & target).sum((1, 2))
    return inter / np.maximum((pred | target).sum((1, 2)), 1)


def crop_figures(
    amodal_iou: NDArray[np.float64], visible_iou: NDArray[np.float64], val: Samples
) -> dict[str, float]:
    """The validation figures of per-sample IoUs: amodal on occluded samples by prompt kind
    and on whole objects, visible on every sample (the columns of ``curve.csv``)."""
    from edge_sameo.train.validate import OCCLUDED, WHOLE

    occ = val.occlusion > OCCLUDED
    return {
        "amodal_occ_modal_box": float(amodal_iou[occ & ~val.amodal_prompt].mean()),
        "amodal_occ_amodal_box": float(amodal_iou[occ & val.amodal_prompt].mean()),
        "amodal_unoccluded": float(amodal_iou[val.occlusion < WHOLE].mean()),
        "visible_all": float(visible_iou.mean()),
    }


@torch.no_grad()
def evaluate_crops(model: MaskRefiner, val: Samples, cfg: RefinerConfig) -> dict[str, float]:
    """:func:`crop_figures` of the refiner's outputs on the validation samples."""
    model.eval()
    preds = []
    for i in range(0, len(val.inputs), 256):
        idx = np.arange(i, min(i + 256, len(val.inputs)))
        x, _ = batch_tensors(val, idx, cfg)
        preds.append((model(x) > 0).numpy())
    model.train()
    pred, target = np.concatenate(preds), val.targets > 127
    return crop_figures(
        mask_ious(pred[:, 0], target[:, 0]), mask_ious(pred[:, 1], target[:, 1]), val
    )


class ShardPool:
    """The newest ``keep`` shards of a folder that ``gen`` is still filling."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder, self.keep = folder, keep
        self.loaded: dict[Path, Samples] = {}

    def refresh(self) -> Samples:
        """Load new shards, drop all but the newest ``keep``; return them as one
        :class:`Samples` (``FileNotFoundError`` when there is none yet)."""
        found = sorted(self.folder.glob("shard_*[0-9].npz"))
        for p in found[-self.keep :]:
            if p not in self.loaded:
                self.loaded[p] = Samples.load(p)
        for p in list(self.loaded)[: -self.keep]:
            del self.loaded[p]
        if not self.loaded:
            raise FileNotFoundError(f"no shard_*.npz in {self.folder}")
        return Samples.concat(list(self.loaded.values()))


def load_init(model: MaskRefiner, path: Path) -> None:
    """Start ``model`` from a ``fit`` output: the same config; the same refiner without the
    occluder channel (its weights for the new channel start at zero, so ``model`` starts
    computing the init's function); or a one-stage refiner of the same U-Net, whose weights
    then start every stage of ``model``'s cascade."""
    init = torch.load(path, weights_only=True)
    cfg = model.config
    # the mirror average is an inference switch over the same weights
    got = dataclasses.replace(RefinerConfig.from_dict(init["config"]), mirror=cfg.mirror)
    if got == cfg:
        model.load_state_dict(init["state_dict"])
        return
    if not got.occluders and cfg.occluders and dataclasses.replace(got, occluders=True) == cfg:
        # Grown: the occluder channel added to every stage's first convolution with zero
        # weights, so the run starts computing the init's function.
        state = dict(init["state_dict"])
        own = model.state_dict()
        for k, v in state.items():
            if own[k].shape != v.shape:  # a first convolution: (out, C_in, 3, 3)
                grown = torch.zeros(own[k].shape, dtype=v.dtype)
                grown[:, : v.shape[1]] = v
                state[k] = grown
        model.load_state_dict(state)
        return
    if got != dataclasses.replace(cfg, stages=1) or not got.use_logits:
        raise SystemExit(f"{path}: its refiner config differs from this run's")
    state = {k: v for k, v in init["state_dict"].items() if not k.startswith("cascade.")}
    model.load_state_dict(state, strict=False)
    for stage in model.cascade:
        assert isinstance(stage, MaskRefiner)
        stage.load_state_dict(state)


def fit(args: argparse.Namespace) -> None:
    """``fit``: train a refiner on the newest shards within ``--minutes`` (cosine learning
    rate), resuming from ``state.pt``; writes ``refiner.pt``, ``curve.csv`` and ``config.json``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = RefinerConfig(
        crop=args.crop,
        widths=tuple(int(x) for x in args.widths.split(",")),
        use_logits=not args.no_logits,
        grow=args.grow,
        residual=args.residual,
        global_dim=args.global_dim,
        stages=args.stages,
        occluders=args.occluders,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = MaskRefiner(cfg)
    if args.bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    state_path = out / "state.pt"
    elapsed, step, seen = 0.0, 0, 0
    if args.init and not state_path.exists():
        load_init(model, Path(args.init))
    if state_path.exists():
        st = torch.load(state_path, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        elapsed, step, seen = float(st["elapsed"]), int(st["step"]), int(st["seen"])
    budget = args.minutes * 60.0
    val = Samples.load(next(Path(args.val).glob("shard_*[0-9].npz")))
    pool = ShardPool(Path(args.shards), args.keep)
    data = pool.refresh()
    for what, samples in (("--shards", data), ("--val", val)):
        if samples.inputs.shape[1] < cfg.in_channels:
            raise SystemExit(
                f"{what}: samples of {samples.inputs.shape[1]} channels, this refiner reads "
                f"{cfg.in_channels} (write them with gen --occluders)"
            )
    rng = np.random.default_rng([args.seed, step])
    curve = out / "curve.csv"
    fields = ["elapsed_s", "step", "samples", "loss", *evaluate_crops(model, val, cfg)]
    if not curve.exists():
        with curve.open("w", newline="") as f:
            csv.writer(f).writerow(fields)
    (out / "config.json").write_text(json.dumps({"refiner": cfg.to_dict(), **vars(args)}))
    t_start = time.perf_counter() - elapsed
    last_eval = last_save = last_refresh = elapsed
    losses: list[float] = []
    model.train()
    while True:
        elapsed = time.perf_counter() - t_start
        frac = min(elapsed / budget, 1.0)
        lr = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        done = elapsed >= budget
        if done or elapsed - last_eval >= args.eval_every:
            metrics = evaluate_crops(model, val, cfg)
            row = [round(elapsed, 1), step, seen, float(np.mean(losses)) if losses else ""]
            with curve.open("a", newline="") as f:
                csv.writer(f).writerow(row + [round(v, 4) for v in metrics.values()])
            print(json.dumps({"elapsed": round(elapsed), "step": step, **metrics}), flush=True)
            losses, last_eval = [], elapsed
        if done or elapsed - last_save >= args.save_every:
            st = {"model": model.state_dict(), "opt": opt.state_dict()}
            st.update(elapsed=elapsed, step=step, seen=seen)
            torch.save(st, out / "state.tmp")
            os.replace(out / "state.tmp", state_path)
            torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict()}, out / "w.tmp")
            os.replace(out / "w.tmp", out / "refiner.pt")
            last_save = elapsed
        if done:
            break
        if elapsed - last_refresh >= args.refresh_every:
            data, last_refresh = pool.refresh(), elapsed
        idx = rng.integers(0, len(data.inputs), args.batch)
        x, y = batch_tensors(data, idx, cfg)
        if args.flip:
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        if args.augment:
            x, y = augment_batch(x, y, rng)
        if args.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            stages = model.forward_stages(x)
        # Every cascade stage learns the masks; the earlier ones at half weight.
        loss = refiner_loss(stages[-1].float(), y)
        for early in stages[:-1]:
            loss = loss + 0.5 * refiner_loss(early.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        seen += len(idx)


#: The recipe's refiner stage: ``fit``'s flags (``--`` dropped, ``_`` for ``-``) plus the
#: shard generator's ``shards`` / ``scenes`` per shard / ``val_scenes`` / ``pillars`` (the
#: share of training scenes with the video world's pillar in front; validation has none) /
#: ``free_shapes`` (the share of training objects drawn as free-form shapes); ``occluders``
#: is both ``fit``'s and the generator's flag,
#: and for a cascade (``stages`` > 1) ``cascade_minutes`` / ``cascade_lr``: a second fit of
#: the cascade, every stage starting from the first fit's one-stage refiner.
STAGE_DEFAULTS: dict[str, Any] = {
    "minutes": 77.0,
    "stages": 2,
    "cascade_minutes": 80.0,
    "cascade_lr": 1e-3,
    "widths": "8,16,32,64",
    "crop": 64,
    "grow": 1.6,
    "flip": True,
    "augment": True,
    "bf16": True,
    "threads": 2,
    "keep": 150,
    "shards": 1000,
    "scenes": 40,
    "val_scenes": 150,
    "pillars": 0.3,
    "free_shapes": 0.3,
    "occluders": True,
}


#: Keys of :data:`STAGE_DEFAULTS` that are not ``fit``'s flags.
NOT_FIT_KEYS = (
    "shards",
    "scenes",
    "val_scenes",
    "pillars",
    "free_shapes",
    "cascade_minutes",
    "cascade_lr",
)


def fit_args(out: Path, shards: Path, val: Path, settings: dict[str, Any]) -> argparse.Namespace:
    """``fit``'s parsed flags for ``settings`` (keys as in :data:`STAGE_DEFAULTS`)."""
    argv = ["fit", "--shards", str(shards), "--val", str(val), "--out", str(out)]
    for key, value in settings.items():
        if key in NOT_FIT_KEYS:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return build_parser().parse_args(argv)


def train_stage(
    nano: Path, out: Path, train_seed: int, val_seed: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """The recipe's refiner stage, resumable: validation shard, then ``fit`` (a one-stage
    refiner, then with ``stages`` > 1 the cascade warm-started from it) while a generator
    process writes fresh training shards beside it; returns the last fit's last curve row,
    the settings and ``weights``, the trained refiner's path."""
    import subprocess
    import sys

    cfg = {**STAGE_DEFAULTS, **settings}
    shards, val = out / "shards", out / "val"
    common = ["--nano", str(nano), "--crop", str(cfg["crop"]), "--grow", str(cfg["grow"])]
    common += ["--occluders"] if cfg["occluders"] else []
    gen = [sys.executable, "-m", "edge_sameo.train.refiner", "gen", *common]
    val_gen = [*gen, "--out", str(val), "--seed", str(val_seed), "--shards", "1"]
    subprocess.run([*val_gen, "--scenes", str(cfg["val_scenes"])], check=True)
    train_gen = [*gen, "--out", str(shards), "--seed", str(train_seed)]
    train_gen += ["--pillars", str(cfg["pillars"]), "--free-shapes", str(cfg["free_shapes"])]
    train_gen += ["--shards", str(cfg["shards"]), "--scenes", str(cfg["scenes"])]
    # a first shard before fit starts; then the generator runs beside it
    subprocess.run([*train_gen[:-4], "--shards", "1", "--scenes", str(cfg["scenes"])], check=True)
    proc = subprocess.Popen(train_gen, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last_fit = out / "fit"
    try:
        fit(fit_args(last_fit, shards, val, {**cfg, "stages": 1}))
        if cfg["stages"] > 1:
            init = str(last_fit / "refiner.pt")
            last_fit = out / "cascade"
            second = {"minutes": cfg["cascade_minutes"], "lr": cfg["cascade_lr"], "init": init}
            fit(fit_args(last_fit, shards, val, {**cfg, **second}))
    finally:
        proc.terminate()
        proc.wait()
    with (last_fit / "curve.csv").open(newline="") as f:
        last = list(csv.DictReader(f))[-1]
    row = {k: float(v) for k, v in last.items() if v}
    return {"settings": cfg, "last": row, "weights": str(last_fit / "refiner.pt")}


def attached_config(config: dict[str, Any], mirror: bool) -> RefinerConfig:
    """The config of a refiner.pt's refiner as attached: with ``mirror``, the last stage
    averaged over the mirror (``RefinerConfig.mirror``; the weights are the same)."""
    cfg = RefinerConfig.from_dict(config)
    return dataclasses.replace(cfg, mirror=True) if mirror else cfg


def attach(args: argparse.Namespace) -> None:
    """Put a trained refiner into a model checkpoint (edge-sameo format)."""
    from edge_sameo.checkpoint import load_model, save_model

    model = load_model(args.model)
    obj = torch.load(args.refiner, weights_only=True)
    refiner = MaskRefiner(attached_config(obj["config"], args.mirror))
    refiner.load_state_dict(obj["state_dict"])
    model.refiner = refiner.eval()
    meta = {"refiner": {"source": str(args.refiner), **json.loads(args.meta or "{}")}}
    save_model(model, args.out, meta=meta)
    print(f"wrote {args.out}")


def bundle(args: argparse.Namespace) -> None:
    """Attach a trained refiner to a model, score it through the app's path on a held-out
    set (and a second world), record everything in the ``metrics.json`` beside ``--out``
    and re-render the model card there."""
    from edge_sameo.io import atomic_write_json
    from edge_sameo.train.card import render
    from edge_sameo.train.score import score_nano

    out = Path(args.out)
    attach(args)
    metrics_path = out.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    obj = torch.load(args.refiner, weights_only=True)
    rows = list(csv.DictReader(Path(args.refiner).with_name("curve.csv").open(newline="")))
    extra = json.loads(args.meta or "{}")
    metrics["refiner"] = {
        "config": attached_config(obj["config"], args.mirror).to_dict(),
        "params": sum(int(v.numel()) for k, v in obj["state_dict"].items() if "running" not in k),
        "commands": extra.get("commands", []),
        "summary": extra.get("summary", ""),
        "validation_last": {k: float(v) for k, v in rows[-1].items() if v},
    }
    if "test_before_refiner" not in metrics:
        metrics["test_before_refiner"] = metrics["test"]
    test = score_nano(out, Path(args.test), threads=args.threads)
    metrics["test"] = {**metrics["test"], **test}
    if args.second_world:
        w = score_nano(out, Path(args.second_world), threads=args.threads)
        metrics["second_world"] = {"description": args.second_world_description, **w}
    atomic_write_json(metrics_path, metrics)
    (out.parent / "MODEL_CARD.md").write_text(render(metrics))
    print(f"wrote {metrics_path} and {out.parent / 'MODEL_CARD.md'}")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``gen``, ``fit``, ``attach`` and ``bundle`` subcommands."""
    p = argparse.ArgumentParser(prog="python -m edge_sameo.train.refiner", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="write shards of refiner samples from fresh scenes")
    g.add_argument("--out", required=True)
    g.add_argument("--nano", default=str(bundled.NANO))
    g.add_argument("--seed", type=int, default=2000)
    g.add_argument("--first", type=int, default=0)
    g.add_argument(
        "--occluders",
        action="store_true",
        help="samples carry the occluder channel (the other boxes' visible logits)",
    )
    g.add_argument("--shards", type=int, default=100)
    g.add_argument("--scenes", type=int, default=40, help="scenes per shard")
    g.add_argument("--crop", type=int, default=64)
    g.add_argument("--grow", type=float, default=1.6)
    g.add_argument(
        "--pillars",
        type=float,
        default=0.0,
        help="share of scenes with the video world's upright pillar in front (SynthConfig)",
    )
    g.add_argument(
        "--free-shapes",
        type=float,
        default=0.0,
        help="share of objects drawn as free-form, mostly non-convex shapes (SynthConfig)",
    )
    f = sub.add_parser("fit", help="train a refiner on the newest shards, wall-clock budget")
    f.add_argument("--shards", required=True)
    f.add_argument("--val", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--minutes", type=float, default=15.0)
    f.add_argument("--init", help="refiner.pt to start from (a new schedule; else random)")
    f.add_argument("--crop", type=int, default=64)
    f.add_argument("--grow", type=float, default=1.6)
    f.add_argument("--widths", default="16,32,64,128")
    f.add_argument("--no-logits", action="store_true")
    f.add_argument("--residual", action="store_true", help="outputs correct the input logits")
    f.add_argument("--global-dim", type=int, default=0, help="fully connected bottleneck width")
    f.add_argument(
        "--occluders",
        action="store_true",
        help="the refiner reads the occluder channel (shards from gen --occluders)",
    )
    f.add_argument("--stages", type=int, default=1, help="U-Nets in a cascade")
    f.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast + channels-last (about 2x on CPUs with AVX-512 bf16 or AMX)",
    )
    f.add_argument("--flip", action="store_true")
    f.add_argument(
        "--augment",
        action="store_true",
        help="the square's 8 symmetries and colour jitter (channel order, gain, contrast, "
        "brightness, grey, noise) on every sample",
    )
    f.add_argument("--lr", type=float, default=2e-3)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--keep", type=int, default=60, help="newest shards kept in memory")
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--eval-every", type=float, default=60.0)
    f.add_argument("--save-every", type=float, default=120.0)
    f.add_argument("--refresh-every", type=float, default=60.0)
    a = sub.add_parser("attach", help="write a model checkpoint with a trained refiner")
    a.add_argument("--model", default=str(bundled.NANO))
    a.add_argument("--refiner", required=True, help="refiner.pt written by fit")
    a.add_argument("--out", required=True)
    a.add_argument("--meta", help="JSON object stored in the checkpoint's meta")
    b = sub.add_parser("bundle", help="attach, score (held-out, second world), card")
    b.add_argument("--model", default=str(bundled.NANO))
    b.add_argument("--refiner", required=True, help="refiner.pt written by fit")
    b.add_argument("--out", default=str(bundled.NANO))
    b.add_argument("--meta", help='JSON: {"commands": [...], "summary": "..."} for the card')
    b.add_argument("--test", required=True, help="held-out COCO-amodal annotations.json")
    b.add_argument("--second-world", help="a world never trained on (annotations.json)")
    b.add_argument("--second-world-description", default="benchmarks/second_world.py")
    b.add_argument("--threads", type=int, default=2)
    for q in (a, b):
        q.add_argument(
            "--mirror",
            action="store_true",
            help="the last stage averaged over the left-right mirror (RefinerConfig.mirror)",
        )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand of ``argv``; return the exit code 0."""
    args = build_parser().parse_args(argv)
    {"gen": generate, "fit": fit, "attach": attach, "bundle": bundle}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

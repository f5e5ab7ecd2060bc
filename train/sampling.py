"""What each step sees: the log-proportional dataset mixture, prompts and targets.

Everything here is a pure function of ``(seed, epoch, slot)`` — slot = the position of
an image in the epoch's global stream of ``steps × batch_size`` picks. That makes a
resumed run (any step) and a DDP run (each rank takes its slots through
``DistributedSampler``) see exactly the batches of an uninterrupted single process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from edge_sameo.train.config import TrainConfig
from edge_sameo.train.data import PreparedSet


def log_proportional(sizes: Sequence[int], weights: Sequence[float] | None = None) -> NDArray:
    """Dataset probabilities ∝ weight × log(1 + size): a set 100× larger is drawn ~3×
    (not 100×) as often, so small sets are not drowned and large ones not overfit to."""
    if not sizes or min(sizes) < 1:
        raise ValueError("every dataset needs at least one image")
    w = np.asarray(weights if weights is not None else [1.0] * len(sizes), np.float64)
    p = w * np.log1p(np.asarray(sizes, np.float64))
    return p / p.sum()


def epoch_picks(
    sizes: Sequence[int], probs: NDArray, total: int, seed: int, epoch: int
) -> NDArray[np.int64]:
    """(total, 2) [dataset, image] picks of one epoch. The dataset of each slot is drawn
    from ``probs``; within a dataset images come from a fresh permutation, cycled when
    the epoch asks for more than it has (every image seen before any twice)."""
    rng = np.random.default_rng([seed, epoch, 0x5A3E0])
    which = rng.choice(len(sizes), size=total, p=probs)
    out = np.zeros((total, 2), np.int64)
    out[:, 0] = which
    for k, n in enumerate(sizes):
        slots = np.flatnonzero(which == k)
        if not len(slots):
            continue
        reps = math.ceil(len(slots) / n)
        krng = np.random.default_rng([seed, epoch, k])
        order = np.concatenate([krng.permutation(n) for _ in range(reps)])
        out[slots, 1] = order[: len(slots)]
    return out


@dataclass(frozen=True, eq=False)
class Batch:
    """The images of one step (on one rank) with their instances' prompts and targets.

    dataset / image: (B,) which prepared set and image; inst_image: (N,) int64 index
    into the B images; boxes: (N, 4) float32 XYXY in the S×S frame; targets: (N, 1,
    M, M) float32 in [0, 1]; weights: (N,) float32, 1 / (instances of its image × B):
    the loss is the mean over images of the mean over each image's instances, which
    makes a DDP gradient average equal the single-process gradient. amodal_prompt: (N,)
    bool, the prompt was the amodal box.
    """

    dataset: NDArray[np.int64]
    image: NDArray[np.int64]
    inst_image: torch.Tensor
    boxes: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    amodal_prompt: torch.Tensor

    @property
    def num_instances(self) -> int:
        return int(self.boxes.shape[0])


def jitter_boxes(
    boxes: NDArray[np.float32],
    rng: np.random.Generator,
    std: float,
    max_frac: float,
    img_size: int,
) -> NDArray[np.float32]:
    """Detector-like noise on (N, 4) XYXY boxes: each coordinate moves by N(0, std·side)
    clipped to ±max_frac·side (side = box width for x, height for y), then the box is
    clipped to the S×S frame and kept at least one pixel wide."""
    if std <= 0 or not len(boxes):
        return boxes
    side = np.repeat(np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1), 2, 1)
    side = side[:, [0, 2, 1, 3]]
    noise = np.clip(rng.normal(0.0, std, boxes.shape), -max_frac, max_frac) * side
    out = np.clip(boxes + noise.astype(np.float32), 0.0, float(img_size))
    out[:, 2] = np.maximum(out[:, 2], np.minimum(out[:, 0] + 1.0, img_size))
    out[:, 3] = np.maximum(out[:, 3], np.minimum(out[:, 1] + 1.0, img_size))
    out[:, 0] = np.minimum(out[:, 0], out[:, 2] - 1.0)
    out[:, 1] = np.minimum(out[:, 1], out[:, 3] - 1.0)
    return out.astype(np.float32)


def make_batch(
    sets: Sequence[PreparedSet],
    picks: NDArray[np.int64],
    slots: NDArray[np.int64],
    cfg: TrainConfig,
    epoch: int,
) -> Batch:
    """Prompts and targets for the images ``picks`` (B, 2) at global ``slots`` (B,)."""
    b = len(picks)
    inst_image: list[int] = []
    boxes: list[NDArray[np.float32]] = []
    targets: list[NDArray[np.uint8]] = []
    weights: list[float] = []
    amodal: list[NDArray[np.bool_]] = []
    for j, ((k, i), slot) in enumerate(zip(picks, slots, strict=True)):
        ps = sets[int(k)]
        rng = np.random.default_rng([cfg.seed, epoch, int(slot), 0xB0C5])
        first, count = int(ps.first[i]), int(ps.count[i])
        chosen = np.arange(first, first + count)
        if count > cfg.max_instances:
            chosen = np.sort(rng.choice(chosen, cfg.max_instances, replace=False))
        n = len(chosen)
        use_amodal = rng.random(n) < cfg.amodal_box_prob
        use_amodal |= np.asarray(ps.visible_area[chosen]) < cfg.min_visible
        box = np.where(
            use_amodal[:, None],
            np.asarray(ps.amodal_box[chosen]),
            np.asarray(ps.visible_box[chosen]),
        ).astype(np.float32)
        boxes.append(jitter_boxes(box, rng, cfg.box_jitter, cfg.box_jitter_max, ps.img_size))
        mask_src = ps.amodal_mask if cfg.target == "amodal" else ps.visible_mask
        targets.append(np.asarray(mask_src[chosen]))
        inst_image += [j] * n
        weights += [1.0 / (n * b)] * n
        amodal.append(use_amodal)
    return Batch(
        dataset=picks[:, 0].copy(),
        image=picks[:, 1].copy(),
        inst_image=torch.tensor(inst_image, dtype=torch.int64),
        boxes=torch.from_numpy(np.concatenate(boxes)),
        targets=torch.from_numpy(np.concatenate(targets)).float().div_(255.0).unsqueeze(1),
        weights=torch.tensor(weights, dtype=torch.float32),
        amodal_prompt=torch.from_numpy(np.concatenate(amodal)),
    )

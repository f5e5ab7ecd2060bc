"""Measure what the embedding cache buys: decoder-training steps/s with the cache
against encoding every step with the frozen encoder (same batches, same model)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from edge_sameo.train.cache import get_or_build
from edge_sameo.train.config import TrainConfig
from edge_sameo.train.distributed import DistContext
from edge_sameo.train.losses import LossWeights
from edge_sameo.train.sampling import epoch_picks, log_proportional, make_batch
from edge_sameo.train.trainer import (
    TrainStep,
    _gather,
    initial_model,
    prepare_sets,
    set_trainable,
    train_step,
)


def cache_speedup(cfg: TrainConfig, steps: int = 20, warmup: int = 3) -> dict[str, Any]:
    """Steps/s of decoder training (``cfg.mode`` must be ``decoder``) from the cache and
    with the encoder run every step, over the same ``steps`` batches after ``warmup``."""
    if cfg.trains_encoder:
        raise ValueError("the cache applies to decoder training (mode: decoder)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = DistContext()
    model = initial_model(cfg)
    params = set_trainable(model, cfg)
    sets, _ = prepare_sets(cfg.replace(val=None, progress=False), model, ctx)
    t0 = time.perf_counter()
    caches = [get_or_build(model, ps, cfg.resolved_cache_dir, cfg.cache_dtype) for ps in sets]
    build_s = time.perf_counter() - t0
    sizes = [ps.num_images for ps in sets]
    probs = log_proportional(sizes, [s.weight for s in cfg.train])
    total = (steps + warmup) * cfg.batch_size
    picks = epoch_picks(sizes, probs, total, cfg.seed, 0)
    weights = LossWeights(
        cfg.dice_weight, cfg.focal_weight, cfg.iou_weight, cfg.focal_gamma, cfg.focal_alpha
    )
    rates: dict[str, float] = {}
    finals: list[dict[str, torch.Tensor]] = []
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    for label, use_cache in (("cache", True), ("encode", False)):
        model.load_state_dict(start_state)
        opt = torch.optim.AdamW(params, lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        module = TrainStep(model, weights, cfg.loss_upsample)
        elapsed = 0.0
        for k in range(steps + warmup):
            slots = np.arange(k * cfg.batch_size, (k + 1) * cfg.batch_size)
            batch = make_batch(sets, picks[slots], slots, cfg, 0)
            t = time.perf_counter()
            source = _gather(sets, caches if use_cache else None, batch)
            train_step(module, model, opt, sched, params, batch, source, not use_cache, cfg)
            if k >= warmup:
                elapsed += time.perf_counter() - t
        rates[label] = steps / elapsed
        finals.append({k: v.clone() for k, v in model.mask_decoder.state_dict().items()})
    # Same batches from the same start: the cache must give the same weights.
    diff = max(float((finals[0][k] - finals[1][k]).abs().max()) for k in finals[0])
    return {
        "steps": steps,
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "model": model.config.name,
        "img_size": model.img_size,
        "cache_steps_per_s": rates["cache"],
        "encode_steps_per_s": rates["encode"],
        "speedup": rates["cache"] / rates["encode"],
        "cache_build_s": build_s,
        "cache_images": sum(sizes),
        "cache_built": any(c.built for c in caches),
        "max_weight_diff": diff,
    }

"""Deterministic, implementation-independent weights and test image for parity checks.

This implements the rule of ``shared/reference/seeded_weights.py`` (the project's
specification for parity vectors): for each state_dict key in manifest order, one
float64 generator draws ``t = randn(shape)`` and

* ``...positional_encoding_gaussian_matrix`` -> t
* ``...pos_embed``                           -> 0.02 * t
* 1-D ``...weight`` (LayerNorm/GroupNorm)    -> 1 + 0.1 * t
* ``...bias``                                -> 0.02 * t
* anything else with >= 2 dims               -> t / sqrt(prod(shape[1:]))
* anything else                              -> 0.02 * t

cast to float32. The manifest of a model is its own ``state_dict`` (keys, shapes,
order), which the tests prove equal to the original checkpoints' manifests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from numpy.typing import NDArray

Manifest = Sequence[tuple[str, tuple[int, ...]]]


def manifest_of(state_dict: Mapping[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    """The ordered ``[(key, shape)]`` of a state_dict."""
    return [(k, tuple(v.shape)) for k, v in state_dict.items()]


def seeded_state_dict(manifest: Manifest, seed: int) -> dict[str, torch.Tensor]:
    """Build the reference state_dict for ``manifest`` and ``seed`` (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in manifest:
        t = torch.randn(tuple(shape), generator=gen, dtype=torch.float64)
        if key.endswith("positional_encoding_gaussian_matrix"):
            pass
        elif key.endswith("pos_embed"):
            t = 0.02 * t
        elif key.endswith(".weight") and len(shape) == 1:
            t = 1.0 + 0.1 * t
        elif key.endswith(".bias"):
            t = 0.02 * t
        elif len(shape) >= 2:
            t = t / math.sqrt(math.prod(shape[1:]))
        else:
            t = 0.02 * t
        out[key] = t.float()
    return out


def reference_image(height: int, width: int, seed: int) -> NDArray[np.uint8]:
    """A smooth synthetic (H, W, 3) uint8 RGB image with a few filled ellipses."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3), np.float64)
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 0.5 + 0.25 * np.sin(a * xx / 37.0 + b * yy / 53.0 + p * 6.28)
    for _ in range(6):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(20, width / 4), rng.uniform(20, height / 4)
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        img[inside] = rng.uniform(0, 1, 3)
    img += rng.normal(0, 0.02, img.shape)
    return np.asarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))

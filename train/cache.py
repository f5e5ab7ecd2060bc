"""The embedding cache: a frozen encoder's output computed once per training image.

With the image encoder frozen (the SAMEO recipe), every epoch would recompute the same
embeddings; on a small CPU that is most of a step. The cache stores them in one
memory-mapped ``.npy`` (I, C, h, w) per prepared set, under a key that changes when
anything that changes the numbers changes: the encoder's weights and config, the
preprocessing code and constants, and the prepared set (its own key covers the
annotation file, the image list and the input size). A cache is written beside its
final place and renamed when complete, so a killed run never leaves a half cache that
looks valid.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from edge_sameo import preprocess
from edge_sameo.checkpoint import state_dict_digest
from edge_sameo.io import atomic_write_json
from edge_sameo.modeling import EfficientSam
from edge_sameo.modeling.efficient_sam import PIXEL_MEAN, PIXEL_STD

if TYPE_CHECKING:
    from edge_sameo.train.data import PreparedSet

CACHE_VERSION = 1


@functools.cache
def preprocess_fingerprint() -> str:
    """sha256 of the preprocessing code and constants (changes when preprocessing does)."""
    h = hashlib.sha256()
    for fn in (preprocess.resize_pixels, preprocess.image_to_tensor, preprocess.normalize_resized):
        h.update(inspect.getsource(fn).encode())
    h.update(repr((PIXEL_MEAN, PIXEL_STD)).encode())
    return h.hexdigest()


def encoder_fingerprint(model: EfficientSam) -> str:
    """sha256 of the image encoder's weights (names, dtypes, shapes, bytes) and config."""
    header = json.dumps(model.config.to_dict(), sort_keys=True)
    return state_dict_digest(model.image_encoder.state_dict(), header=header)


def cache_key(model: EfficientSam, prepared: PreparedSet, dtype: str) -> str:
    parts = (CACHE_VERSION, encoder_fingerprint(model), preprocess_fingerprint())
    return hashlib.sha256(repr((*parts, prepared.key, dtype)).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class EmbeddingCache:
    """(I, C, h, w) embeddings of a prepared set's images, memory-mapped read-only."""

    path: Path
    key: str
    embeddings: NDArray[Any]
    built: bool

    def get(self, index: NDArray[np.int64] | list[int]) -> torch.Tensor:
        """(B, C, h, w) float32 embeddings of images ``index``."""
        idx = np.asarray(index, np.int64)
        return torch.from_numpy(np.asarray(self.embeddings[idx], np.float32))


@torch.no_grad()
def encode_prepared(
    model: EfficientSam, pixels: torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(B, 3, S, S) [0, 1] prepared pixels -> (B, C, h, w) embeddings (eval mode)."""
    x = preprocess.normalize_resized(pixels.to(device), model.img_size)
    return model.encode(x)


def get_or_build(
    model: EfficientSam,
    prepared: PreparedSet,
    cache_dir: Path,
    dtype: str = "float32",
    batch: int = 16,
    device: torch.device | str = "cpu",
    progress: Callable[[int], object] | None = None,
) -> EmbeddingCache:
    """The cache of ``prepared`` for ``model``'s encoder, computed first when missing."""
    key = cache_key(model, prepared, dtype)
    directory = Path(cache_dir) / "embeddings" / f"{prepared.name}-{key[:16]}"
    meta_path = directory / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key:
        return EmbeddingCache(
            directory, key, np.load(directory / "embeddings.npy", mmap_mode="r"), built=False
        )
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg = model.config
    shape = (prepared.num_images, cfg.embed_dim, cfg.grid_size, cfg.grid_size)
    out = np.lib.format.open_memmap(tmp / "embeddings.npy", "w+", np.dtype(dtype), shape)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, prepared.num_images, batch):
            idx = np.arange(start, min(start + batch, prepared.num_images))
            emb = encode_prepared(model, prepared.pixels_tensor(idx), device)
            out[idx] = emb.cpu().numpy().astype(dtype)
            if progress is not None:
                progress(len(idx))
    finally:
        model.train(was_training)
    out.flush()
    del out
    atomic_write_json(
        tmp / "meta.json",
        {
            "key": key,
            "version": CACHE_VERSION,
            "shape": list(shape),
            "dtype": dtype,
            "dataset": prepared.name,
            "dataset_key": prepared.key,
        },
    )
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return EmbeddingCache(
        directory, key, np.load(directory / "embeddings.npy", mmap_mode="r"), built=True
    )

"""Mask utilities: COCO RLE (pycocotools), boxes of masks, IoU."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pycocotools import mask as mask_utils

RLE = dict[str, Any]


def encode_rle(mask: NDArray[np.bool_]) -> RLE:
    """(H, W) bool -> COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return dict(rle)


def decode_rle(rle: RLE) -> NDArray[np.bool_]:
    """COCO RLE (counts as str or bytes, or uncompressed list) -> (H, W) bool."""
    if isinstance(rle.get("counts"), list):
        h, w = rle["size"]
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return np.asarray(mask_utils.decode(rle), dtype=bool)


def mask_to_box(mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """(H, W) bool -> (4,) float32 XYXY pixel box enclosing the mask (zeros if empty)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4, np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def mask_iou(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)

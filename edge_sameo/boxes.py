"""Box prompt validation: everything a detector or a user may hand us."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError


def validate_boxes(boxes: Any, image_hw: tuple[int, int]) -> NDArray[np.float32]:
    """Check and normalise box prompts.

    boxes: (N, 4) XYXY in original-image pixels (N may be 0; a single (4,) box is
    accepted). Reversed corners are reordered and boxes are clipped to the image.
    Raises ``InputError`` (a ``ValueError``) naming the offending row for NaN/inf
    values or a box of zero area after clipping. Returns (N, 4) float32.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.float32)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(f"boxes must have shape (N, 4) XYXY, got {arr.shape}")
    h, w = image_hw
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"box {i} {arr[i].tolist()} has a NaN or infinite coordinate")
    x1 = np.clip(np.minimum(arr[:, 0], arr[:, 2]), 0, w)
    x2 = np.clip(np.maximum(arr[:, 0], arr[:, 2]), 0, w)
    y1 = np.clip(np.minimum(arr[:, 1], arr[:, 3]), 0, h)
    y2 = np.clip(np.maximum(arr[:, 1], arr[:, 3]), 0, h)
    empty = (x2 - x1 <= 0) | (y2 - y1 <= 0)
    if empty.any():
        i = int(np.argmax(empty))
        raise InputError(
            f"box {i} {arr[i].tolist()} has zero area after clipping to the {w}x{h} image"
        )
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)

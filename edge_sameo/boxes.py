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
    clean, finite, empty = _clip(arr, image_hw)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InputError(f"box {i} {arr[i].tolist()} has a NaN or infinite coordinate")
    if empty.any():
        h, w = image_hw
        i = int(np.argmax(empty))
        raise InputError(
            f"box {i} {arr[i].tolist()} has zero area after clipping to the {w}x{h} image"
        )
    return clean


def clip_boxes(
    boxes: NDArray[np.float32], image_hw: tuple[int, int]
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """``validate_boxes`` for many boxes of which some may be bad (a detector's), without
    raising. boxes: (N, 4) XYXY in original-image pixels. Returns the (N, 4) float32 boxes
    clipped and reordered as ``validate_boxes`` returns them, and an (N,) bool mask of the
    valid ones (finite, non-empty after clipping); the rows it marks invalid hold no box."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    clean, finite, empty = _clip(arr, image_hw)
    return clean, finite & ~empty


def _clip(
    arr: NDArray[np.float64], image_hw: tuple[int, int]
) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.bool_]]:
    """(N, 4) XYXY -> the (N, 4) float32 boxes reordered and clipped to the image, and two
    (N,) bool masks: the finite rows, and the finite rows empty after clipping."""
    h, w = image_hw
    finite = np.asarray(np.isfinite(arr).all(axis=1), bool)
    arr = np.where(finite[:, None], arr, 0.0)
    x1 = np.clip(np.minimum(arr[:, 0], arr[:, 2]), 0, w)
    x2 = np.clip(np.maximum(arr[:, 0], arr[:, 2]), 0, w)
    y1 = np.clip(np.minimum(arr[:, 1], arr[:, 3]), 0, h)
    y2 = np.clip(np.maximum(arr[:, 1], arr[:, 3]), 0, h)
    empty = finite & ((x2 - x1 <= 0) | (y2 - y1 <= 0))
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32), finite, empty

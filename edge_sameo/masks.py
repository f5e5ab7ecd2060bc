"""Mask utilities: COCO RLE (pycocotools), boxes of masks, IoU."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pycocotools import mask as mask_utils

RLE = dict[str, Any]


def rle_from_mask(mask: NDArray[np.bool_]) -> RLE:
    """(H, W) bool -> compressed COCO RLE with bytes counts (pycocotools' own form).

    The runs are counted in numpy over the columns the mask occupies only (pycocotools
    wants a column-major copy of the whole frame, which costs more than the encoding for
    an object that covers a fraction of it); pycocotools compresses them."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    cols = np.flatnonzero(m.any(axis=0))
    if len(cols) == 0:
        counts = [h * w]
    else:
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
        band = m[:, x0:x1].T.ravel()  # column-major over the occupied columns
        edges = np.flatnonzero(band[1:] != band[:-1]) + 1
        runs = np.diff(np.concatenate([[0], edges, [len(band)]]))
        if band[0]:  # COCO runs start with zeros
            runs = np.concatenate([[0], runs])
        runs[0] += x0 * h
        tail = (w - x1) * h
        if band[-1]:
            runs = np.concatenate([runs, [tail]]) if tail else runs
        else:
            runs[-1] += tail
        counts = runs.tolist()
    return dict(mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w))


def rle_to_json(rle: RLE) -> RLE:
    """A compressed RLE with ``counts`` as str and ``size`` as ints, ready for JSON."""
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def encode_rle(mask: NDArray[np.bool_]) -> RLE:
    """(H, W) bool -> COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    return rle_to_json(rle_from_mask(mask))


def decode_rle(rle: RLE) -> NDArray[np.bool_]:
    """COCO RLE (counts as str or bytes, or uncompressed list) -> (H, W) bool."""
    if isinstance(rle.get("counts"), list):
        h, w = rle["size"]
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return np.asarray(mask_utils.decode(rle), dtype=bool)


def rle_area(rle: RLE) -> int:
    """Pixel count of a compressed RLE mask."""
    return int(mask_utils.area(rle))


def rle_xywh(rle: RLE) -> list[float]:
    """COCO XYWH pixel box of a compressed RLE mask ([0, 0, 0, 0] when empty)."""
    return [float(v) for v in mask_utils.toBbox(rle)]


def rle_intersection_area(a: RLE, b: RLE) -> int:
    """Pixel count of the intersection of two compressed RLE masks of one size."""
    return int(mask_utils.area(mask_utils.merge([a, b], intersect=True)))


def compressed_counts(counts: bytes) -> NDArray[np.int64] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``,
    decoded without it), or None when the string cannot be one: a character outside
    ``0``..``o``, a number cut off at the end, or one longer than 7 characters (35 bits,
    more than any image has pixels)."""
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if c.size == 0 or c.min() < 0 or c.max() > 63:
        return None
    more = (c & 0x20) != 0
    if more[-1]:
        return None
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:
        return None
    group = np.repeat(np.arange(len(ends)), lengths)
    shift = 5 * (np.arange(c.size) - starts[group])
    x = np.zeros(len(ends), np.int64)
    np.add.at(x, group, (c & 0x1F) << shift)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative])
    # From the third number on, each is stored as the difference to the one two before.
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    return runs


def check_rle_counts(counts: bytes | list[Any], height: int, width: int) -> None:
    """Raise ``InputError`` unless ``counts`` (compressed bytes or an uncompressed list) are
    non-negative run lengths covering exactly ``height * width`` pixels: pycocotools
    trusts them, and garbage makes it read out of bounds or loop for minutes."""
    from edge_sameo.errors import InputError

    if isinstance(counts, list):
        try:
            runs = np.asarray([int(v) for v in counts], np.int64)
        except (TypeError, ValueError, OverflowError):
            raise InputError("uncompressed RLE counts must be integers") from None
    else:
        parsed = compressed_counts(counts)
        if parsed is None:
            raise InputError("RLE counts are not a valid COCO-compressed string")
        runs = parsed
    if runs.size and runs.min() < 0:
        raise InputError("RLE counts contain a negative run length")
    if int(runs.sum()) != height * width:
        raise InputError(
            f"RLE counts cover {int(runs.sum())} pixels, not the {height}x{width} = "
            f"{height * width} of the mask"
        )


def mask_to_box(mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """(H, W) bool -> (4,) float32 XYXY pixel box enclosing the mask (zeros if empty)."""
    # Rows and columns that hold a pixel: far cheaper than the pixels' coordinates.
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(cols) == 0:
        return np.zeros(4, np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def mask_iou(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty."""
    union = np.count_nonzero(np.logical_or(a, b))
    if union == 0:
        return 1.0
    return float(np.count_nonzero(np.logical_and(a, b)) / union)

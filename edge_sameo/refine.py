"""Per-box windows for the mask refiner: where to look, what to feed it, where to paste.

The one implementation used by the predictor (every runtime) and by refiner training, so
the refiner is trained on exactly the inputs the app gives it.

Frames: images are (H, W, 3) uint8 RGB; boxes and windows (N, 4) float32 XYXY in
continuous image pixels (pixel i covers [i, i+1)); low-res logits (N, L, L) float32 cover
the whole image (the decoders' output, L = 64 for nano); crops (N, C, R, R) float32.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.modeling.efficient_sam import PIXEL_MEAN, PIXEL_STD
from edge_sameo.modeling.refiner import LOGIT_CLIP, RefinerConfig

#: Smallest window side in pixels (a degenerate box still gets a usable window).
MIN_WINDOW = 8.0

_MEAN_255 = tuple(float(m * 255.0) for m in PIXEL_MEAN)
_MEAN = np.asarray(PIXEL_MEAN, np.float32) * 255.0
_STD = np.asarray(PIXEL_STD, np.float32) * 255.0


def mask_boxes(
    low_res_logits: NDArray[np.float32], image_hw: tuple[int, int]
) -> NDArray[np.float32]:
    """(N, L, L) logits -> (N, 4) XYXY image-pixel box of each mask (logit > 0); NaN rows
    for empty masks."""
    n, lh, lw = low_res_logits.shape
    h, w = image_hw
    out = np.full((n, 4), np.nan, np.float32)
    on = np.asarray(low_res_logits > 0)
    rows, cols = np.asarray(on.any(axis=2)), np.asarray(on.any(axis=1))
    for i in range(n):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(ys):
            out[i] = (xs[0] * w / lw, ys[0] * h / lh, (xs[-1] + 1) * w / lw, (ys[-1] + 1) * h / lh)
    return out


def refine_windows(
    prompts: NDArray[np.float32], coarse: NDArray[np.float32] | None, grow: float
) -> NDArray[np.float32]:
    """(N, 4) prompt boxes united with the (N, 4) coarse amodal boxes (NaN rows ignored),
    grown by ``grow`` about the centre -> (N, 4) windows (may extend past the image)."""
    box = prompts.astype(np.float32).copy()
    if coarse is not None:
        ok = ~np.isnan(coarse).any(axis=1)
        box[ok, :2] = np.minimum(box[ok, :2], coarse[ok, :2])
        box[ok, 2:] = np.maximum(box[ok, 2:], coarse[ok, 2:])
    centre = (box[:, :2] + box[:, 2:]) / 2
    half = np.maximum((box[:, 2:] - box[:, :2]) * grow, MIN_WINDOW) / 2
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def _to_crop(window: NDArray[np.float32], crop: int, scale: tuple[float, float]) -> NDArray:
    """2×3 inverse affine map: crop pixel index -> source pixel index, for a source whose
    pixels are ``scale`` = (sx, sy) image pixels wide (1 for the image itself)."""
    x0, y0, x1, y1 = (float(v) for v in window)
    sx, sy = (x1 - x0) / crop, (y1 - y0) / crop
    return np.array(
        [
            [sx / scale[0], 0.0, (x0 + 0.5 * sx) / scale[0] - 0.5],
            [0.0, sy / scale[1], (y0 + 0.5 * sy) / scale[1] - 0.5],
        ],
        np.float64,
    )


def _warp(src: NDArray, m: NDArray, crop: int, border: float | tuple[float, ...]) -> NDArray:
    return cv2.warpAffine(
        src,
        m,
        (crop, crop),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border,
    )


def crop_inputs(
    image: NDArray[np.uint8],
    windows: NDArray[np.float32],
    prompts: NDArray[np.float32],
    cfg: RefinerConfig,
    amodal_logits: NDArray[np.float32] | None = None,
    visible_logits: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """The refiner's (N, C, R, R) float32 input: RGB (ImageNet-normalised; mean grey past
    the image border), the prompt box channel, and with ``cfg.use_logits`` the amodal and
    visible (N, L, L) low-res logits resampled into each window (-1 past the border), and with
    ``cfg.occluders`` the other boxes' visible logits, per pixel the largest
    (:func:`other_boxes_max`), resampled the same way."""
    r, n = cfg.crop, len(windows)
    h, w = image.shape[:2]
    out = np.empty((n, cfg.in_channels, r, r), np.float32)
    # The logit channels, each (N, L, L) clipped to ±LOGIT_CLIP and scaled to ±1, in the
    # channel order from cfg.prompt_channels on.
    maps: list[NDArray[np.float32]] = []
    if cfg.use_logits:
        if amodal_logits is None or visible_logits is None:
            raise ValueError("this refiner takes the decoders' logits as inputs")
        maps = [
            np.clip(lo, -LOGIT_CLIP, LOGIT_CLIP) / LOGIT_CLIP
            for lo in (amodal_logits, visible_logits)
        ]
        if cfg.occluders:
            maps.append(other_boxes_max(maps[1]))
    centres = np.arange(r, dtype=np.float32) + 0.5
    for i in range(n):
        win = windows[i]
        rgb = _warp(image, _to_crop(win, r, (1.0, 1.0)), r, _MEAN_255).astype(np.float32)
        out[i, :3] = ((rgb - _MEAN) / _STD).transpose(2, 0, 1)
        sx, sy = (win[2] - win[0]) / r, (win[3] - win[1]) / r
        bx = (prompts[i, [0, 2]] - win[0]) / sx
        by = (prompts[i, [1, 3]] - win[1]) / sy
        inx = (centres >= bx[0]) & (centres < bx[1])
        iny = (centres >= by[0]) & (centres < by[1])
        out[i, 3] = iny[:, None] & inx[None, :]
        for c, scaled in enumerate(maps, start=cfg.prompt_channels):
            lh, lw = scaled.shape[1:]
            m = _to_crop(win, r, (w / lw, h / lh))
            out[i, c] = _warp(np.ascontiguousarray(scaled[i], np.float32), m, r, -1.0)
    return out


def other_boxes_max(v: NDArray[np.float32]) -> NDArray[np.float32]:
    """(N, L, L) maps of N boxes -> (N, L, L): for each box, per cell the largest value among
    the other boxes' maps (-1 where there is no other box). Two passes over the top two
    values, not N² maps."""
    n = len(v)
    if n == 1:
        return np.full_like(v, -1.0)
    order = np.argsort(-v, axis=0)[:2]
    top = np.take_along_axis(v, order, 0)
    mine = order[0][None] == np.arange(n)[:, None, None]
    return np.where(mine, top[1][None], top[0][None]).astype(np.float32)


def refiner_crops(
    image: NDArray[np.uint8],
    prompts: NDArray[np.float32],
    cfg: RefinerConfig,
    amodal_logits: NDArray[np.float32],
    visible_logits: NDArray[np.float32] | None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The app's whole path from decoded boxes to the refiner's input: (N, 4) image-pixel
    prompts and the chosen (N, L, L) amodal / visible low-res logits -> the (N, 4) windows
    (:func:`refine_windows` around the prompt and the coarse amodal mask's box) and the
    (N, C, R, R) crops (:func:`crop_inputs`)."""
    h, w = image.shape[:2]
    windows = refine_windows(prompts, mask_boxes(amodal_logits, (h, w)), cfg.grow)
    return windows, crop_inputs(image, windows, prompts, cfg, amodal_logits, visible_logits)


def crop_masks(
    masks: NDArray[np.bool_] | list[NDArray[np.bool_]], windows: NDArray[np.float32], crop: int
) -> NDArray[np.float32]:
    """(N, H, W) bool full-image masks -> (N, R, R) float32 in [0, 1] in each window (the
    refiner's training targets, resampled like its inputs)."""
    out = np.empty((len(windows), crop, crop), np.float32)
    for i, win in enumerate(windows):
        src = np.asarray(masks[i], np.float32)
        out[i] = _warp(src, _to_crop(win, crop, (1.0, 1.0)), crop, 0.0)
    return out


def paste_masks(
    logits: NDArray[np.float32], windows: NDArray[np.float32], image_hw: tuple[int, int]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The refiner's (N, 2, R, R) logits -> full-image (N, H, W) amodal and visible masks
    (bilinear in each window, logit > 0; nothing outside the window). The visible mask is
    kept inside the amodal one."""
    n, _, r, _ = logits.shape
    h, w = image_hw
    amodal = np.zeros((n, h, w), bool)
    visible = np.zeros((n, h, w), bool)
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in windows[i])
        ix0, iy0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        ix1, iy1 = min(int(np.ceil(x1)), w), min(int(np.ceil(y1)), h)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        sx, sy = r / (x1 - x0), r / (y1 - y0)
        m = np.array(
            [[sx, 0.0, (ix0 + 0.5 - x0) * sx - 0.5], [0.0, sy, (iy0 + 0.5 - y0) * sy - 0.5]],
            np.float64,
        )
        src = np.ascontiguousarray(logits[i, :2].transpose(1, 2, 0), np.float32)
        region = cv2.warpAffine(
            src,
            m,
            (ix1 - ix0, iy1 - iy0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        a = region[..., 0] > 0
        amodal[i, iy0:iy1, ix0:ix1] = a
        visible[i, iy0:iy1, ix0:ix1] = a & (region[..., 1] > 0)
    return amodal, visible

"""The one preprocessing implementation (predictor, export, calibration, training).

EfficientSAM's own: ``/255``, resize *straight* to S×S (bilinear, no aspect-preserving
pad), ImageNet mean/std. Kept exactly, or the original checkpoints lose accuracy.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from edge_sameo.modeling.efficient_sam import PIXEL_MEAN, PIXEL_STD


def resize_pixels(image: NDArray[np.uint8], img_size: int) -> NDArray[np.float32]:
    """(H, W, 3) uint8 RGB -> (1, 3, S, S) float32 in [0, 1]: the encoder-graph input.

    ``/255`` first, then a straight bilinear resize (half-pixel centres, no antialias)
    on floats, as the original; normalisation happens inside the graphs. Through OpenCV,
    whose bilinear resize is the same kernel as ``F.interpolate(..., "bilinear",
    align_corners=False)`` (within 1e-6, tested) in less than half its time (0.42 vs 0.98 ms
    for a 640×480 frame on one thread of an AMD EPYC).
    """
    x = np.asarray(image).astype(np.float32) / np.float32(255.0)
    if x.shape[:2] != (img_size, img_size):
        x = cv2.resize(x, (img_size, img_size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def image_to_tensor(image: NDArray[np.uint8], device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    return t.permute(2, 0, 1).unsqueeze(0).float() / 255.0


def normalize_resized(x: torch.Tensor, img_size: int) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, 3, S, S) resized and ImageNet-normalised."""
    if x.shape[-2:] != (img_size, img_size):
        x = F.interpolate(x, (img_size, img_size), mode="bilinear", align_corners=False)
    mean = x.new_tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def boxes_to_model_frame(
    boxes: torch.Tensor, image_hw: tuple[int, int], img_size: int
) -> torch.Tensor:
    """(N, 4) XYXY in original-image pixels -> the S×S model-input frame (x·S/W, y·S/H)."""
    h, w = image_hw
    scale = boxes.new_tensor([img_size / w, img_size / h, img_size / w, img_size / h])
    return boxes * scale


def upscale_masks(logits: NDArray[np.float32], image_hw: tuple[int, int]) -> NDArray[np.bool_]:
    """(N, h, w) low-res logits -> (N, H, W) bool masks (logit >= 0 after upsampling).

    The original's bicubic kernel (a = -0.75, half-pixel centres) through OpenCV, which
    matches ``F.interpolate(..., "bicubic")`` to ~1e-4 in the logits (> 99.99 % equal
    mask pixels, measured) at a fraction of the cost on full-HD frames.
    """
    h, w = image_hw
    n = logits.shape[0]
    out = np.empty((n, h, w), bool)
    for start in range(0, n, 512):  # OpenCV takes at most 512 channels
        chunk = np.ascontiguousarray(logits[start : start + 512].transpose(1, 2, 0))
        up = cv2.resize(chunk, (w, h), interpolation=cv2.INTER_CUBIC)
        out[start : start + 512] = (up.reshape(h, w, -1) >= 0).transpose(2, 0, 1)
    return out

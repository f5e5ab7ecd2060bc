"""The SAMEO loss: Dice + Focal (γ = 2) on the mask, 0.05 · L1 on the predicted IoU.

Candidate supervision (the decoder returns 3 candidate masks per box):

* **mask loss**: only the candidate with the lowest Dice + Focal loss is supervised
  (SAM's minimum-over-candidates rule). A box is ambiguous (whole object, a part, the
  visible or the hidden extent), and forcing all three onto one target would collapse
  them; the minimum lets each specialise.
* **IoU loss**: *all three* predicted IoUs are regressed (L1) onto the true IoU of their
  own candidate (binarised at logit 0 against the target at 0.5). The predictor keeps
  the candidate with the highest predicted IoU, so every score must be calibrated, not
  only the winner's.

Shapes: logits (N, K, M, M) — the decoder's low-res logits upsampled to the target
size; targets (N, 1, M, M) float in [0, 1] (cell coverage); iou_pred (N, K).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    dice: float = 1.0
    focal: float = 1.0
    iou: float = 0.05
    gamma: float = 2.0
    #: Focal α for the positive class (negative: no α weighting).
    alpha: float = 0.25


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """(N, K, M, M) logits, (N, 1, M, M) targets -> (N, K) soft Dice loss."""
    p = logits.sigmoid().flatten(2)
    t = targets.flatten(2)
    inter = (p * t).sum(-1)
    return 1.0 - (2.0 * inter + eps) / (p.sum(-1) + t.sum(-1) + eps)


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25
) -> torch.Tensor:
    """(N, K, M, M) logits, (N, 1, M, M) targets -> (N, K) focal loss, mean over pixels
    (RetinaNet's form, as torchvision's ``sigmoid_focal_loss``; soft targets allowed)."""
    t = targets.expand_as(logits)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.flatten(2).mean(-1)


@torch.no_grad()
def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, K) IoU of each binarised candidate (logit > 0) with the target (>= 0.5);
    1 when both are empty."""
    pred = (logits > 0).flatten(2)
    gt = (targets >= 0.5).flatten(2).expand_as(pred)
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass(frozen=True)
class LossOutput:
    """Per-instance losses (N,) — ``total`` carries the gradient — and the chosen
    candidate (N,) with its true IoU (N,)."""

    total: torch.Tensor
    dice: torch.Tensor
    focal: torch.Tensor
    iou: torch.Tensor
    chosen: torch.Tensor
    true_iou: torch.Tensor


def sameo_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    weights: LossWeights,
    upsample: str = "bicubic",
) -> LossOutput:
    """The recipe's loss per instance (see module docstring). Logits smaller than the
    targets are upsampled with ``upsample`` (``"bicubic"``: the predictor's kernel, so the
    boundary trained is the boundary the app draws)."""
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits, targets.shape[-2:], mode=upsample, align_corners=False)
    dice = dice_loss(logits, targets)
    focal = focal_loss(logits, targets, weights.gamma, weights.alpha)
    mask = weights.dice * dice + weights.focal * focal
    chosen = mask.detach().argmin(dim=1)
    rows = torch.arange(len(chosen), device=logits.device)
    true_iou = mask_iou(logits, targets)
    iou_l1 = (iou_pred - true_iou).abs().mean(dim=1)
    total = mask[rows, chosen] + weights.iou * iou_l1
    return LossOutput(
        total=total,
        dice=dice[rows, chosen].detach(),
        focal=focal[rows, chosen].detach(),
        iou=iou_l1.detach(),
        chosen=chosen,
        true_iou=true_iou[rows, chosen],
    )

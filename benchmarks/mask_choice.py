"""Is the amodal gap in the masks or in choosing among them? Scores all three candidates.

The decoder returns three candidate masks per box and the app keeps the one its IoU head
rates highest. This script scores, on a COCO-amodal set with tight ground-truth boxes, the
mean IoU of: the IoU head's choice (what the app does), each fixed candidate, and the
oracle (the best of the three per instance, an upper bound no selector can pass). If the
oracle is far above the chosen mask, better selection would close the gap; if even the
oracle is low, the candidates themselves are the limit. Usage::

    python benchmarks/mask_choice.py --model models/nano/nano.pt \\
        --data models/nano/data/test/annotations.json --prompt modal
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from edge_sameo.preprocess import upscale_masks
from edge_sameo.train.validate import prompted_instances


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = int((pred | gt).sum())
    return int((pred & gt).sum()) / union if union else 1.0


def _summary(rows: np.ndarray) -> dict[str, Any]:
    """rows: (n, 5) = IoU of the chosen mask, of candidates 0-2, index chosen."""
    if not len(rows):
        return {"count": 0}
    cands = rows[:, 1:4]
    chosen = rows[:, 4].astype(int)
    return {
        "count": len(rows),
        "chosen_by_iou_head": float(rows[:, 0].mean()),
        "candidate": [float(cands[:, k].mean()) for k in range(3)],
        "oracle_best_of_3": float(cands.max(axis=1).mean()),
        "chosen_histogram": np.bincount(chosen, minlength=3).tolist(),
        "iou_head_picks_oracle": float(
            (cands[np.arange(len(rows)), chosen] >= cands.max(axis=1) - 1e-9).mean()
        ),
    }


@torch.no_grad()
def mask_choice(
    model_path: Path, data: Path, decoder: str, prompt: str, min_occlusion: float, cache: Path
) -> dict[str, Any]:
    rows: list[tuple[float, float, float, float, int]] = []
    occluded: list[bool] = []
    for hw, logits, iou, ann in prompted_instances(model_path, data, prompt, decoder, cache):
        target = ann.visible if decoder == "modal" else ann.segmentation
        gt = mask_utils.decode(target).astype(bool)
        cands = upscale_masks(np.ascontiguousarray(logits, np.float32), hw)
        scores = [_iou(cands[k], gt) for k in range(3)]
        best = int(iou.argmax())
        rows.append((scores[best], *scores, best))
        occluded.append(ann.occlusion_rate > min_occlusion)
    a = np.asarray(rows, np.float64).reshape(-1, 5)
    occ = np.asarray(occluded, bool)
    return {
        "model": str(model_path),
        "data": str(data),
        "decoder": decoder,
        "prompt": prompt,
        "min_occlusion": min_occlusion,
        "all": _summary(a),
        "occluded": _summary(a[occ]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/nano/nano.pt"))
    p.add_argument("--data", type=Path, required=True, help="COCO-amodal annotations.json")
    p.add_argument(
        "--decoder",
        choices=("modal", "mask"),
        default="mask",
        help="mask: the amodal head (default); modal: the visible-mask head",
    )
    p.add_argument("--prompt", choices=("modal", "amodal"), default="modal")
    p.add_argument(
        "--min-occlusion",
        type=float,
        default=0.1,
        help="instances above this occlusion rate form the 'occluded' group",
    )
    p.add_argument("--cache", type=Path, default=Path("out/mask_choice_cache"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report = mask_choice(
        args.model, args.data, args.decoder, args.prompt, args.min_occlusion, args.cache
    )
    print(
        f"{'group':<10}{'n':>6}{'chosen':>8}{'cand 0':>8}{'cand 1':>8}{'cand 2':>8}"
        f"{'oracle':>8}  picks"
    )
    for group in ("all", "occluded"):
        s = report[group]
        if s["count"]:
            c = s["candidate"]
            print(
                f"{group:<10}{s['count']:>6}{s['chosen_by_iou_head']:>8.3f}{c[0]:>8.3f}"
                f"{c[1]:>8.3f}{c[2]:>8.3f}{s['oracle_best_of_3']:>8.3f}  "
                f"{s['chosen_histogram']}"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

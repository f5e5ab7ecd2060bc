"""Where does a box-prompted model lose IoU? Per shape class and per object size.

Scores one decoder of a model (``--decoder modal``: visible masks; ``mask``: the amodal
head) on a COCO-amodal set from ``edge-sameo synth`` with tight ground-truth boxes, and
reports, per class and per size bucket (longer side of the box, pixels), the mean IoU and
the false-positive / false-negative area as fractions of the object's area. Usage::

    python benchmarks/nano_per_class.py --model models/nano/nano.pt \\
        --data models/nano/data/val/annotations.json --decoder modal --max-occlusion 0.1
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from edge_sameo.predictor import best_masks
from edge_sameo.train.validate import prompted_instances

SIZES = ((0, 130), (130, 170), (170, 10_000))


def _summary(rows: list[tuple[float, float, float]]) -> dict[str, Any]:
    a = np.asarray(rows, np.float64).reshape(-1, 3)
    return {
        "count": len(a),
        "mIoU": float(a[:, 0].mean()) if len(a) else None,
        "fp_area": float(a[:, 1].mean()) if len(a) else None,
        "fn_area": float(a[:, 2].mean()) if len(a) else None,
    }


@torch.no_grad()
def per_class(
    model_path: Path, data: Path, decoder: str, prompt: str, max_occlusion: float, cache: Path
) -> dict[str, Any]:
    names = {c["id"]: c["name"] for c in json.loads(data.read_text())["categories"]}
    by_class: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    by_size: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for hw, logits, iou, ann in prompted_instances(model_path, data, prompt, decoder, cache):
        if ann.occlusion_rate > max_occlusion:
            continue
        target = ann.visible if decoder == "modal" else ann.segmentation
        gt = mask_utils.decode(target).astype(bool)
        pred = best_masks(logits[None], iou[None], hw)[0][0]
        area = max(int(gt.sum()), 1)
        inter = int((pred & gt).sum())
        union = int((pred | gt).sum())
        row = (
            inter / max(union, 1),
            int((pred & ~gt).sum()) / area,
            int((~pred & gt).sum()) / area,
        )
        by_class[names[ann.category_id]].append(row)
        side = max(ann.bbox[2], ann.bbox[3])
        key = next(f"{lo}-{hi}" for lo, hi in SIZES if lo <= side < hi)
        by_size[key].append(row)
    every = [r for rows in by_class.values() for r in rows]
    return {
        "model": str(model_path),
        "data": str(data),
        "decoder": decoder,
        "prompt": prompt,
        "max_occlusion": max_occlusion,
        "all": _summary(every),
        "per_class": {k: _summary(v) for k, v in sorted(by_class.items())},
        "per_size_px": {f"{lo}-{hi}": _summary(by_size[f"{lo}-{hi}"]) for lo, hi in SIZES},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/nano/nano.pt"))
    p.add_argument("--data", type=Path, required=True, help="COCO-amodal annotations.json")
    p.add_argument("--decoder", choices=("modal", "mask"), default="modal")
    p.add_argument("--prompt", choices=("modal", "amodal"), default="amodal")
    p.add_argument("--max-occlusion", type=float, default=0.1)
    p.add_argument("--cache", type=Path, default=Path("out/per_class_cache"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report = per_class(
        args.model, args.data, args.decoder, args.prompt, args.max_occlusion, args.cache
    )
    print(f"{'group':<12}{'n':>6}{'mIoU':>8}{'FP area':>9}{'FN area':>9}")
    groups = [("all", report["all"]), *report["per_class"].items()]
    groups += [(f"{k} px", v) for k, v in report["per_size_px"].items()]
    for group, figures in groups:
        if figures["count"]:
            print(
                f"{group:<12}{figures['count']:>6}{figures['mIoU']:>8.3f}"
                f"{figures['fp_area']:>9.3f}{figures['fn_area']:>9.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

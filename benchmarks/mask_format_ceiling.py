"""How much IoU does the low-res mask format itself cost? An upper bound, no model involved.

A model's mask is an M×M logit grid over the squashed input frame, upsampled to the image
(bicubic, logit >= 0: ``edge_sameo.preprocess.upscale_masks``). This script gives every
ground-truth mask of a synthetic set the "perfect" logits that format can hold — the
training target itself (``train.data.coverage``: the fraction of each cell covered) minus
one half — and scores the upsampled result against the full-resolution mask. What is lost
here is lost to the format; what a model loses beyond it is the model's. Usage::

    python benchmarks/mask_format_ceiling.py --seed 9100 --count 300 --json out.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_sameo.data.synth import SynthConfig, generate_scene, item_seed
from edge_sameo.io import atomic_write_json
from edge_sameo.preprocess import upscale_masks
from edge_sameo.train.data import coverage

#: (name, low-res mask size): nano at 256 px, nano at 384 px, EfficientSAM at 1024 px.
FORMATS = (("nano 256 px", 64), ("nano 384 px", 96), ("EfficientSAM 1024 px", 256))
#: Longer side of the object's box in pixels (as benchmarks/nano_per_class.py).
SIZES = ((0, 130), (130, 170), (170, 10_000))


def ceiling_iou(mask: np.ndarray, size: int) -> float:
    """IoU of ``mask`` after the round trip through a ``size``×``size`` coverage grid."""
    logits = coverage(mask, size).astype(np.float32)[None] / 255.0 - 0.5
    back = upscale_masks(logits, mask.shape)[0]
    union = int((back | mask).sum())
    return 1.0 if union == 0 else int((back & mask).sum()) / union


def _longer_side(mask: np.ndarray) -> int:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1)


def measure(seed: int, count: int) -> dict[str, Any]:
    cfg = SynthConfig()
    names = cfg.classes
    rows: dict[str, list[tuple[str, int, float, float]]] = defaultdict(list)
    for i in tqdm(range(count), unit="scene"):
        scene = generate_scene(item_seed(seed, i), cfg)
        for inst in scene.instances:
            for kind, mask in (("amodal", inst.amodal), ("visible", inst.visible)):
                if not mask.any():
                    continue
                side = _longer_side(inst.amodal)
                for label, size in FORMATS:
                    rows[f"{label}|{kind}"].append(
                        (names[inst.category_id - 1], side, inst.occlusion_rate,
                         ceiling_iou(mask, size))
                    )  # fmt: skip
    out: dict[str, Any] = {"seed": seed, "scenes": count, "formats": {}}
    for key, values in rows.items():
        label, kind = key.split("|")
        iou = np.array([v[3] for v in values])
        side = np.array([v[1] for v in values])
        occ = np.array([v[2] for v in values])
        cls = np.array([v[0] for v in values])
        entry = {
            "low_res": dict(FORMATS)[label],
            "count": len(iou),
            "mIoU": float(iou.mean()),
            "occluded (> 0.1)": float(iou[occ > 0.1].mean()) if (occ > 0.1).any() else None,
            "per_size": {
                f"{lo}-{hi} px": float(iou[(side >= lo) & (side < hi)].mean())
                for lo, hi in SIZES
                if ((side >= lo) & (side < hi)).any()
            },
            "per_class": {c: float(iou[cls == c].mean()) for c in names if (cls == c).any()},
        }
        out["formats"].setdefault(label, {})[kind] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=9100)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    result = measure(args.seed, args.count)
    for label, kinds in result["formats"].items():
        for kind, e in kinds.items():
            print(
                f"{label:22s} {kind:8s} mIoU {e['mIoU']:.3f}  "
                f"occluded {e['occluded (> 0.1)']:.3f}  "
                + "  ".join(f"{k} {v:.3f}" for k, v in e["per_size"].items())
                + "  | "
                + " ".join(f"{k} {v:.3f}" for k, v in e["per_class"].items())
            )
    if args.json is not None:
        atomic_write_json(args.json, result)
        print(json.dumps({"wrote": str(args.json)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Learning curves of refiner runs (``python -m edge_sameo.train.refiner fit`` writes
``curve.csv``), one PNG: each validation figure against wall-clock minutes, a line per run, with the
decoders' own figure on the same crops as the reference line::

    python benchmarks/plot_refiner_curves.py A=runs/abl/A/curve.csv B=runs/abl/B/curve.csv \\
        --reference runs/ref/val/shard_00000.npz --out docs/figures/refiner_ablation.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

#: curve.csv column -> panel title.
PANELS = {
    "amodal_occ_modal_box": "amodal, occluded, modal boxes",
    "amodal_occ_amodal_box": "amodal, occluded, amodal boxes",
    "amodal_unoccluded": "amodal, unoccluded (< 0.05)",
    "visible_all": "visible, every instance",
}


def read_curve(path: Path) -> dict[str, list[float]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows if r.get(k)] for k in ("elapsed_s", *PANELS)}


def decoder_reference(val_shard: Path) -> dict[str, float]:
    """The same crop-frame IoUs for the decoders' own logits (the refiner's inputs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edge_sameo.train.refiner import Samples, crop_figures, mask_ious

    s = Samples.load(val_shard)
    target = s.targets > 127
    return crop_figures(
        mask_ious(s.inputs[:, 4] > 0, target[:, 0]), mask_ious(s.inputs[:, 5] > 0, target[:, 1]), s
    )


def plot(
    runs: dict[str, dict[str, list[float]]], reference: dict[str, float] | None, out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_sameo.io import save_figure

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), sharex=True)
    for ax, (key, title) in zip(axes, PANELS.items(), strict=True):
        for label, curve in runs.items():
            minutes = np.asarray(curve["elapsed_s"][: len(curve[key])]) / 60
            ax.plot(minutes, curve[key], marker=".", label=label)
        if reference is not None:
            ax.axhline(reference[key], color="grey", ls="--", label="decoders alone")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("crop IoU (validation, seed 2100)")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+", help="label=curve.csv")
    p.add_argument("--reference", type=Path, help="validation shard for the decoders' line")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    runs = {}
    for spec in args.runs:
        label, sep, path = spec.partition("=")
        if not sep:
            p.error(f"expected label=curve.csv, got {spec!r}")
        runs[label] = read_curve(Path(path))
    ref = decoder_reference(args.reference) if args.reference else None
    plot(runs, ref, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Held-out amodal mIoU of nano-recipe runs against their stage-1 training, as one PNG.

Each argument is ``label=metrics.json`` as ``python -m edge_sameo.train nano`` writes it; append
``+PRIOR`` (``label=metrics.json+PRIOR``) when the run's stage 1 continued the weights of the
run labelled ``PRIOR`` (``warm_start``), so its samples are counted on top of the prior's.
The x axis is the stage-1 training samples (images seen: epochs × steps × batch, log scale;
stage 2 is the same for every recipe run), the y axis the gate's figure — the amodal head's
mIoU on occluded instances of the held-out scenes, modal boxes (filled) and amodal boxes
(hollow) — with the visible-mask baseline and the gate. ``--fit A,B,...`` fits
``mIoU = a + b·log2(samples)`` through those runs and prints what it would take to reach the
gate at that rate (a trend through the measured points, not a prediction)::

    python benchmarks/plot_nano_experiments.py \\
        "bundled=models/nano/metrics.json" \\
        "bicubic=docs/figures/nano_bicubic_experiment_metrics.json" \\
        "warm=docs/figures/nano_warm_experiment_metrics.json+bundled" \\
        "28ep=docs/figures/nano_28ep_experiment_metrics.json" \\
        --fit bicubic,28ep --out docs/figures/nano_experiments.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

GATE = 0.85
FIGURE = "inst_mIoU_occluded"


def read_run(spec: str, earlier: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    label, sep, rest = spec.partition("=")
    path, plus, prior = rest.partition("+")
    if not sep or not label or not path or (plus and not prior):
        raise ValueError(f"expected label=metrics.json[+PRIOR], got {spec!r}")
    if prior and prior not in earlier:
        raise ValueError(f"{label}: prior run {prior!r} is not an earlier argument")
    try:
        metrics = json.loads(Path(path).read_text())
        s1 = metrics["stage1"]["config"]
        samples = int(s1["epochs"]) * int(s1["steps_per_epoch"]) * int(s1["batch_size"])
        test = metrics["test"]
        modal, amodal = test["amodal_head_modal_boxes"], test["amodal_head_amodal_boxes"]
        run = {
            "samples": samples + (earlier[prior]["samples"] if prior else 0),
            "modal_boxes": float(modal[FIGURE]),
            "amodal_boxes": float(amodal[FIGURE]),
            "baseline": float(modal["inst_baseline_mIoU_occluded"]),
            "arch": _arch(metrics["model_config"]),
            "test_seed": int(test["seed"]),
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a train nano metrics.json ({exc})") from exc
    return label, run


def _arch(mc: dict[str, Any]) -> str:
    return (
        f"{mc['img_size']} px, {mc['encoder_depth']}×{mc['encoder_dim']} encoder, "
        f"{mc['embed_dim']}-d decoder"
    )


def fit_trend(runs: dict[str, dict[str, Any]], labels: list[str]) -> dict[str, float]:
    """Least squares ``y = a + b·log2(samples)`` (modal boxes) through ``labels``."""
    missing = [k for k in labels if k not in runs]
    if missing or len(labels) < 2:
        raise ValueError(f"--fit needs two or more run labels, unknown: {missing}")
    x = np.array([math.log2(runs[k]["samples"]) for k in labels])
    y = np.array([runs[k]["modal_boxes"] for k in labels])
    if np.ptp(x) == 0:
        raise ValueError("--fit runs all have the same number of samples")
    b, a = np.polyfit(x, y, 1)
    out = {"per_doubling": float(b), "intercept": float(a)}
    if b > 0:
        out["samples_for_gate"] = float(2 ** ((GATE - a) / b))
        out["times_the_largest_run"] = out["samples_for_gate"] / float(2 ** x.max())
    return out


def plot(runs: dict[str, dict[str, Any]], trend: dict[str, float] | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_sameo.io import save_figure

    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    archs = sorted({r["arch"] for r in runs.values()})
    colours = {a: f"C{i}" for i, a in enumerate(archs)}
    offsets = [(6, -10), (6, 4), (-8, -14), (-8, 6)]  # nearby runs' labels apart
    for i, (label, r) in enumerate(runs.items()):
        c = colours[r["arch"]]
        ax.plot(r["samples"], r["modal_boxes"], "o", color=c, ms=7)
        ax.plot(r["samples"], r["amodal_boxes"], "o", mfc="none", color=c, ms=7)
        dx, dy = offsets[i % len(offsets)]
        ax.annotate(
            label,
            (r["samples"], r["modal_boxes"]),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=8,
            ha="left" if dx > 0 else "right",
        )
    for a in archs:
        ax.plot([], [], "o", color=colours[a], label=a)
    ax.plot([], [], "o", color="grey", label="modal boxes (the gate's figure)")
    ax.plot([], [], "o", mfc="none", color="grey", label="amodal boxes")
    baseline = np.mean([r["baseline"] for r in runs.values()])
    ax.axhline(baseline, color="grey", lw=1, ls="--", label=f"visible-mask baseline {baseline:.3f}")
    ax.axhline(GATE, color="tab:red", lw=1, ls=":", label=f"gate {GATE:.2f}")
    xs = [r["samples"] for r in runs.values()]
    right = max(xs) * 2
    if trend is not None:
        if "samples_for_gate" in trend:
            right = max(right, trend["samples_for_gate"] * 1.5)
        grid = np.geomspace(min(xs), right, 50)
        ax.plot(
            grid,
            trend["intercept"] + trend["per_doubling"] * np.log2(grid),
            "k:",
            lw=1,
            label=f"trend of the fitted runs: {trend['per_doubling']:+.3f} per doubling",
        )
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.5, right)
    ax.set_xlabel("stage-1 training samples (images seen, log scale)")
    ax.set_ylabel("held-out amodal mIoU, occluded instances")
    ax.set_title("nano recipe runs: what stage-1 training bought on the gate's figure")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="label=metrics.json[+PRIOR]")
    p.add_argument("--fit", help="comma-separated labels to fit a log-linear trend through")
    p.add_argument("--out", type=Path, default=Path("docs/figures/nano_experiments.png"))
    args = p.parse_args(argv)
    try:
        runs: dict[str, dict[str, Any]] = {}
        for spec in args.runs:
            label, run = read_run(spec, runs)
            runs[label] = run
        trend = fit_trend(runs, args.fit.split(",")) if args.fit else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plot(runs, trend, args.out)
    for label, r in runs.items():
        print(
            f"{label:>12}: {r['samples']:>7} samples  modal boxes {r['modal_boxes']:.3f}  "
            f"amodal boxes {r['amodal_boxes']:.3f}  ({r['arch']}, test seed {r['test_seed']})"
        )
    if trend is not None:
        print(f"trend through {args.fit}: {trend['per_doubling']:+.4f} per doubling of samples")
        if "samples_for_gate" in trend:
            print(
                f"  reaches {GATE} at {trend['samples_for_gate']:.3g} samples, "
                f"{trend['times_the_largest_run']:.3g}x the largest fitted run"
            )
        else:
            print("  does not rise: no samples reach the gate at this rate")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

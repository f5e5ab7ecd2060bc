"""Held-out box AP50 of the bundled detector phase by phase, as one PNG.

Each argument is ``label=metrics.json`` as ``train.detector`` writes it (``held_out`` with
per-class AP50). The x axis is the cumulative training time, so the plot shows what each
hour of CPU training bought::

    python benchmarks/plot_detector_phases.py \\
        "3=docs/figures/detector_phase3_metrics.json" ... \\
        "7=models/detector/metrics.json" --out docs/figures/detector_phases.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GATE = 0.90


def read_phase(spec: str) -> tuple[str, dict[str, Any]]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"expected label=metrics.json, got {spec!r}")
    try:
        metrics = json.loads(Path(path).read_text())
        held = metrics["held_out"]
        seconds = float(metrics["train_seconds"])
        float(held["box_AP50"]), float(held["box_AP50_class_agnostic"])
        # Early phases were scored before per-class figures were kept.
        per_class = {k: v["AP50"] for k, v in held.get("per_class", {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a train.detector metrics.json ({exc})") from exc
    return label, {"seconds": seconds, "held": held, "per_class": per_class}


def plot(phases: list[tuple[str, dict[str, Any]]], out: Path, start_hours: float = 0.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_sameo.io import save_figure

    hours, t = [], start_hours
    for _, p in phases:
        t += p["seconds"] / 3600
        hours.append(t)
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    classes = sorted({c for _, p in phases for c in p["per_class"]})
    for c in classes:
        ys = [p["per_class"].get(c) for _, p in phases]
        ax.plot(hours, ys, lw=0.8, alpha=0.55, marker=".", label=c)
    for key, name, style in (
        ("box_AP50", "AP50, mean over classes", "k-o"),
        ("box_AP50_class_agnostic", "AP50, class-agnostic", "k--s"),
    ):
        ax.plot(hours, [p["held"][key] for _, p in phases], style, lw=2, label=name)
    ax.axhline(GATE, color="tab:red", lw=1, ls=":", label=f"gate {GATE:.2f}")
    for h, (label, _) in zip(hours, phases, strict=True):
        ax.annotate(
            f"phase {label}",
            (h, 0.0),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            xycoords=("data", "axes fraction"),
        )
    ax.set_xlabel("cumulative training time on 2 CPU cores [h] (phases continue each other)")
    ax.set_ylabel("box AP50, held-out scenes")
    ax.set_title("Bundled YOLOv8n on the synthetic world, held-out seed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phases", nargs="+", help="label=metrics.json, in training order")
    p.add_argument("--out", type=Path, default=Path("docs/figures/detector_phases.png"))
    p.add_argument(
        "--start-hours", type=float, default=0.0, help="training time before the first phase"
    )
    args = p.parse_args(argv)
    try:
        phases = [read_phase(s) for s in args.phases]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plot(phases, args.out, args.start_hours)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

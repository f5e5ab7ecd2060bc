"""Per-epoch metrics: a CSV (one row per epoch) and a PNG of the curves, both atomic."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_sameo.io import atomic_write_bytes, save_figure

LOSS_KEYS = ("loss", "dice", "focal", "iou_l1")
VAL_KEYS = ("val_inst_mIoU", "val_inst_mIoU_occluded", "val_mIoU", "val_mIoU_occ")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """All rows, columns in first-seen order (later epochs may add columns)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def plot_curves(path: Path, rows: Sequence[Mapping[str, Any]], title: str = "") -> None:
    """Loss parts (left, log scale) and validation figures (right) against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(10, 4))
    for key in LOSS_KEYS:
        ys = [_num(r.get(key)) for r in rows]
        if any(not math.isnan(y) and y > 0 for y in ys):
            ax_l.plot(epochs, ys, marker="o", label=key)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("epoch")
    ax_l.set_title("training loss (mean per epoch)")
    ax_l.legend()
    shown = False
    for key in (*VAL_KEYS, "val_baseline_mIoU_occluded", "val_inst_baseline_mIoU_occluded"):
        ys = [_num(r.get(key)) for r in rows]
        if any(not math.isnan(y) for y in ys):
            ax_v.plot(epochs, ys, marker="o", label=key.removeprefix("val_"))
            shown = True
    ax_v.set_xlabel("epoch")
    ax_v.set_title("validation")
    if shown:
        ax_v.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

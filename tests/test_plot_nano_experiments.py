"""benchmarks/plot_nano_experiments.py: reads train nano's metrics.json files, counts a warm
start's prior samples, fits the log-linear trend, draws one PNG, and turns bad input into a
one-line error with exit code 2."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_benchmark

MODEL = {"img_size": 256, "encoder_depth": 4, "encoder_dim": 128, "embed_dim": 64}


def _script() -> ModuleType:
    return load_benchmark("plot_nano_experiments")


def _metrics(path: Path, epochs: int, occluded: float) -> Path:
    head = {"inst_mIoU_occluded": occluded, "inst_baseline_mIoU_occluded": 0.6}
    path.write_text(
        json.dumps(
            {
                "model_config": MODEL,
                "stage1": {"config": {"epochs": epochs, "steps_per_epoch": 10, "batch_size": 8}},
                "test": {
                    "seed": 9100,
                    "amodal_head_modal_boxes": head,
                    "amodal_head_amodal_boxes": {**head, "inst_mIoU_occluded": occluded + 0.01},
                },
            }
        )
    )
    return path


def test_warm_start_samples_trend_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = _script()
    a = _metrics(tmp_path / "a.json", 10, 0.65)  # 800 samples
    b = _metrics(tmp_path / "b.json", 10, 0.67)  # + 800 on top of a's: 1600
    label, run = plot.read_run(f"a={a}", {})
    assert label == "a" and run["samples"] == 800 and run["amodal_boxes"] == pytest.approx(0.66)
    _, warm = plot.read_run(f"b={b}+a", {"a": run})
    assert warm["samples"] == 1600
    trend = plot.fit_trend({"a": run, "b": warm}, ["a", "b"])
    assert trend["per_doubling"] == pytest.approx(0.02)  # one doubling bought 0.02
    doublings = (plot.GATE - 0.67) / 0.02
    assert trend["samples_for_gate"] == pytest.approx(1600 * 2**doublings)
    assert math.isclose(trend["times_the_largest_run"], 2**doublings, rel_tol=1e-9)
    out = tmp_path / "fig" / "runs.png"
    assert plot.main([f"a={a}", f"b={b}+a", "--fit", "a,b", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob("*.tmp.png"))
    assert "+0.0200 per doubling" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = _script()
    good = _metrics(tmp_path / "good.json", 10, 0.65)
    notes = tmp_path / "notes.txt"
    notes.write_text("not json")
    for args in (
        [f"x={notes}"],
        ["no-label"],
        [f"x={tmp_path / 'missing.json'}"],
        [f"x={good}+nobody"],
        [f"x={good}", "--fit", "x"],
        [f"x={good}", f"y={good}", "--fit", "x,y"],  # same samples: no trend
    ):
        assert plot.main([*args, "--out", str(tmp_path / "p.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "p.png").exists()

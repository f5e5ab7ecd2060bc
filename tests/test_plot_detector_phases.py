"""benchmarks/plot_detector_phases.py: reads train.detector's metrics.json files, draws one PNG,
and turns a file that is not one into a one-line error with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_benchmark


def _script() -> ModuleType:
    return load_benchmark("plot_detector_phases")


def _metrics(path: Path, ap50: float, per_class: bool) -> Path:
    held = {"box_AP50": ap50, "box_AP50_class_agnostic": ap50 + 0.05}
    if per_class:
        held["per_class"] = {"disc": {"AP50": ap50 + 0.01}, "bar": {"AP50": ap50 - 0.1}}
    path.write_text(json.dumps({"train_seconds": 1800.0, "held_out": held}))
    return path


def test_plots_phases_with_and_without_per_class(tmp_path: Path) -> None:
    plot = _script()
    a = _metrics(tmp_path / "a.json", 0.7, per_class=False)
    b = _metrics(tmp_path / "b.json", 0.8, per_class=True)
    label, phase = plot.read_phase(f"2={b}")
    assert label == "2" and phase["per_class"] == pytest.approx({"disc": 0.81, "bar": 0.7})
    out = tmp_path / "fig" / "phases.png"
    assert plot.main([f"1={a}", f"2={b}", "--start-hours", "1.5", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob("*.tmp.png"))


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = _script()
    notes = tmp_path / "notes.txt"
    notes.write_text("not json")
    for spec in (f"x={notes}", "no-label", f"x={tmp_path / 'missing.json'}"):
        assert plot.main([spec, "--out", str(tmp_path / "p.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "p.png").exists()

"""python -m edge_sameo.train test: the bundled models scored on fresh scenes as their cards do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_sameo.errors import InputError
from edge_sameo.train.cli import main
from edge_sameo.train.score import (
    BARS,
    BARS_SECOND_WORLD,
    DETECTOR,
    NANO,
    ScoreConfig,
    bars_line,
    nano_bars,
    nano_gate,
    report,
    run_scores,
    used_seeds,
)


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at least 1"):
        ScoreConfig(seed=1, out=tmp_path, count=0)
    with pytest.raises(InputError, match="nothing to score"):
        ScoreConfig(seed=1, out=tmp_path, nano=None, detector=None)
    with pytest.raises(InputError, match="model not found"):
        ScoreConfig(seed=1, out=tmp_path, nano=tmp_path / "missing.pt")


def test_cli_bad_model_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["test", "--seed", "5", "--only", "nano", "--nano", str(tmp_path / "no.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("train test: error: model not found") and "\n" not in err


def test_training_seeds_are_read_from_the_model_cards() -> None:
    nano = json.loads((NANO.parent / "metrics.json").read_text())["data"]
    assert used_seeds(NANO, "nano") == {
        nano["train"]["seed"]: "training",
        nano["val"]["seed"]: "model selection",
    }
    det = json.loads((DETECTOR.parent / "metrics.json").read_text())["config"]
    assert used_seeds(DETECTOR, "detector") == {det["seed"]: "training and model selection"}
    assert nano["test"]["seed"] not in used_seeds(NANO, "nano")


def test_nano_bars() -> None:
    def test(modal: float, amodal: float, whole: float) -> dict[str, dict[str, float]]:
        return {
            "amodal_head_modal_boxes": {"inst_mIoU_occluded": modal, "inst_mIoU_unoccluded": whole},
            "amodal_head_amodal_boxes": {"inst_mIoU_occluded": amodal},
        }

    at_bars = test(BARS["modal"], BARS["amodal"], BARS["unoccluded"])
    assert nano_gate(at_bars)
    assert nano_bars(at_bars)["amodal"] == (BARS["amodal"], BARS["amodal"], True)
    assert not nano_gate(test(BARS["modal"] - 1e-3, 0.99, 0.99))
    assert not nano_gate(test(0.99, BARS["amodal"] - 1e-3, 0.99))
    assert not nano_gate(test(0.99, 0.99, BARS["unoccluded"] - 1e-3))
    # the second world's bars have no whole-object bar and lower thresholds
    low = test(BARS_SECOND_WORLD["modal"], BARS_SECOND_WORLD["amodal"], 0.0)
    assert nano_gate(low, BARS_SECOND_WORLD) and not nano_gate(low)
    assert "NOT met" in bars_line(low) and "NOT met" not in bars_line(low, BARS_SECOND_WORLD)


def test_bundled_models_on_fresh_scenes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ultralytics")
    train_seed = next(iter(used_seeds(NANO, "nano")))
    cfg = ScoreConfig(seed=train_seed, out=tmp_path / "t", count=2)
    result = run_scores(cfg)
    # A training seed is not held out, and the run says so.
    assert f"seed {train_seed} is the training seed of {NANO}" in capsys.readouterr().err

    coco = json.loads((cfg.out / "nano_data" / "annotations.json").read_text())
    nano = result["nano"]
    assert nano["images"] == len(coco["images"]) and nano["instances"] == len(coco["annotations"])
    for head in ("amodal_head_modal_boxes", "amodal_head_amodal_boxes"):
        assert 0.0 < nano[head]["inst_mIoU"] <= 1.0
    assert nano["gate_met"] == nano_gate(nano)

    det = result["detector"]
    labels = list((cfg.out / "detector_data" / "labels" / "train").glob("*.txt"))
    objects = sum(len(p.read_text().splitlines()) for p in labels)
    assert sum(c["ground_truth"] for c in det["per_class"].values()) == objects > 0
    assert (
        det["imgsz"]
        == json.loads((DETECTOR.parent / "metrics.json").read_text())["config"]["imgsz"]
    )
    assert det["gate_met"] == (det["box_AP50"] >= 0.90)

    text = report(result)
    assert f"seed {train_seed}, 2 scenes" in text
    assert f"bars (amodal masks, app's path): {bars_line(nano)}" in text
    assert nano["refiner"] is True  # the bundled model is scored with its refiner

    # A rerun reuses the generated scenes.
    stamp = (cfg.out / "nano_data" / "annotations.json").stat().st_mtime_ns
    again = run_scores(ScoreConfig(seed=train_seed, out=cfg.out, count=2, detector=None))
    assert (cfg.out / "nano_data" / "annotations.json").stat().st_mtime_ns == stamp
    assert again["nano"]["amodal_head_modal_boxes"] == nano["amodal_head_modal_boxes"]

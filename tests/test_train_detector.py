"""train.detector: config checks and a tiny end-to-end run of ultralytics' trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sameo.data import SynthConfig
from edge_sameo.train.detector import DetectorTrainConfig, average_weights, main, train_detector


def test_config_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="held-out"):
        DetectorTrainConfig(out=tmp_path, seed=5, test_seed=5)
    with pytest.raises(ValueError, match="positive"):
        DetectorTrainConfig(out=tmp_path, epochs=0)
    # ultralytics' "auto" optimizer ignores lr0: asking for one without an optimizer is an error.
    with pytest.raises(ValueError, match="explicit optimizer"):
        DetectorTrainConfig(out=tmp_path, lr0=0.003)
    assert DetectorTrainConfig(out=tmp_path, optimizer="SGD", lr0=0.003).lr0 == 0.003
    with pytest.raises(ValueError, match="cache must be"):
        DetectorTrainConfig(out=tmp_path, cache="gpu")
    with pytest.raises(ValueError, match="hours must be positive"):
        DetectorTrainConfig(out=tmp_path, hours=0.0)
    with pytest.raises(ValueError, match="warmup"):
        DetectorTrainConfig(out=tmp_path, warmup_epochs=-1.0)
    with pytest.raises(ValueError, match="pillars is a probability"):
        DetectorTrainConfig(out=tmp_path, pillars=1.5)


def test_hours_and_warmup_reach_ultralytics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--hours becomes ultralytics' ``time`` (which then owns the epoch count), --warmup-epochs
    its ``warmup_epochs``; without --hours no ``time`` is passed at all."""
    import ultralytics

    import edge_sameo.train.detector as det

    calls: list[dict[str, object]] = []

    class FakeYOLO:
        def __init__(self, model: str) -> None:
            self.trainer = None

        def train(self, **kwargs: object) -> None:
            calls.append(kwargs)

    monkeypatch.setattr(ultralytics, "YOLO", FakeYOLO)
    monkeypatch.setattr(det, "evaluate_detector", lambda cfg, best, s, y, n: {"weights": str(best)})
    monkeypatch.setattr(det, "export_openvino", lambda w, imgsz: w)
    base = dict(train_count=4, test_count=2, imgsz=64)
    det.train_detector(
        DetectorTrainConfig(out=tmp_path / "a", hours=1.5, warmup_epochs=0.5, **base)
    )
    det.train_detector(DetectorTrainConfig(out=tmp_path / "b", **base))
    assert calls[0]["time"] == 1.5 and calls[0]["warmup_epochs"] == 0.5
    assert "time" not in calls[1] and calls[1]["warmup_epochs"] == 3.0


def test_pillars_reach_the_training_scenes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--pillars adds pillar boxes to the exported training labels; the held-out labels stay
    the default world's, so phases with and without pillars are scored on the same scenes."""
    import ultralytics

    import edge_sameo.train.detector as det

    class FakeYOLO:
        def __init__(self, model: str) -> None:
            self.trainer = None

        def train(self, **kwargs: object) -> None:
            pass

    monkeypatch.setattr(ultralytics, "YOLO", FakeYOLO)
    monkeypatch.setattr(det, "evaluate_detector", lambda cfg, best, s, y, n: {"weights": str(best)})
    monkeypatch.setattr(det, "export_openvino", lambda w, imgsz: w)
    base = dict(train_count=6, test_count=3, imgsz=64)

    def labels(out: Path, split: str) -> dict[str, list[list[float]]]:
        return {
            f.name: [[float(v) for v in line.split()] for line in f.read_text().splitlines()]
            for f in sorted(out.glob(f"data/{split}/labels/*/*.txt"))
        }

    def is_pillar(row: list[float]) -> bool:  # class box (id 1), 14-22 % wide, 45-80 % tall
        return row[0] == 1 and 0.13 <= row[3] <= 0.23 and 0.44 <= row[4] <= 0.81

    det.train_detector(DetectorTrainConfig(out=tmp_path / "plain", **base))
    det.train_detector(DetectorTrainConfig(out=tmp_path / "pillars", pillars=1.0, **base))
    plain, pillars = labels(tmp_path / "plain", "train"), labels(tmp_path / "pillars", "train")
    assert len(pillars) == len(plain) == 6
    for name, rows in pillars.items():
        assert sum(map(is_pillar, rows)) == sum(map(is_pillar, plain[name])) + 1, name
    held_out = labels(tmp_path / "plain", "test")
    assert held_out and held_out == labels(tmp_path / "pillars", "test")


def test_cli_usage_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--lr0", "0.003"])
    assert exc.value.code == 2
    assert "explicit optimizer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--hours", "-1"])
    assert exc.value.code == 2
    assert "hours must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--pillars", "-0.5"])
    assert exc.value.code == 2
    assert "pillars is a probability" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--average-with", str(tmp_path / "missing.pt")])
    assert exc.value.code == 2
    assert "no weights file" in capsys.readouterr().err


def test_average_weights_is_the_parameter_mean(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    first = DetectionModel("yolov8n.yaml", nc=7, verbose=False)
    second = DetectionModel("yolov8n.yaml", nc=7, verbose=False)
    with torch.no_grad():
        for p in second.parameters():
            p.add_(torch.randn_like(p))
        second.model[0].bn.running_mean.fill_(3.0)
    torch.save({"model": first, "ema": None, "epoch": -1}, tmp_path / "a.pt")
    torch.save({"model": None, "ema": second, "epoch": 5}, tmp_path / "b.pt")
    out = average_weights(tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "avg.pt")
    averaged = torch.load(out, weights_only=False)
    assert averaged["epoch"] == -1 and averaged["ema"] is None
    got = averaged["model"].state_dict()
    sa, sb = first.state_dict(), second.state_dict()
    for key in ("model.0.conv.weight", "model.22.cv3.2.2.bias", "model.0.bn.running_mean"):
        assert torch.allclose(got[key], (sa[key] + sb[key]) / 2), key
    assert not torch.allclose(got["model.0.conv.weight"], sa["model.0.conv.weight"])
    assert not (tmp_path / "avg.pt.tmp").exists()

    other = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    torch.save({"model": other, "ema": None}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="differ in architecture"):
        average_weights(tmp_path / "a.pt", tmp_path / "c.pt", tmp_path / "bad.pt")


@pytest.mark.slow
def test_tiny_training_scores_held_out_and_exports_openvino(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    cfg = DetectorTrainConfig(
        out=tmp_path / "det",
        train_count=12,
        test_count=4,
        imgsz=64,
        epochs=1,
        batch=4,
        workers=0,
        cache="ram",
    )
    result = train_detector(cfg)
    held = result["held_out"]
    assert result["epochs_trained"] == 1
    assert held["seed"] == cfg.test_seed and held["images"] == 4
    for key in ("box_AP50", "box_AP50_95", "box_AP50_class_agnostic"):
        assert 0.0 <= held[key] <= 1.0, key
    per_class = held["per_class"]
    assert set(per_class) == set(SynthConfig().classes)
    found = sum(c["as_itself"] + sum(c["confused_with"].values()) for c in per_class.values())
    assert found == sum(c["ground_truth"] for c in per_class.values()) > 0
    assert (tmp_path / "det" / "yolov8n_synth.pt").is_file()
    assert (tmp_path / "det" / "confusion_matrix.png").is_file()
    folder = tmp_path / "det" / "yolov8n_synth_openvino_model"
    assert (folder / "yolov8n_synth.xml").is_file() and (folder / "metadata.yaml").is_file()


def test_epochs_trained_counts_result_rows(tmp_path: Path) -> None:
    from edge_sameo.train.detector import epochs_trained

    assert epochs_trained(tmp_path) is None
    (tmp_path / "results.csv").write_text("epoch,time\n1,7.0\n2,14.1\n3,21.0\n\n")
    assert epochs_trained(tmp_path) == 3


@pytest.mark.slow
def test_int8_quantisation_writes_an_int8_export_that_detects(tmp_path: Path) -> None:
    """NNCF through ultralytics' exporter: the export holds quantised layers and finds the
    objects of a synthetic scene like the float detector does."""
    import numpy as np
    from ultralytics import YOLO

    from edge_sameo import bundled
    from edge_sameo.data.synth import generate_scene
    from edge_sameo.train.detector import quantize_detector

    path = quantize_detector(bundled.DETECTOR_WEIGHTS, tmp_path, imgsz=320, count=8, seed=77)
    assert path.is_dir() and "FakeQuantize" in next(path.glob("*.xml")).read_text()
    scene = generate_scene(np.random.default_rng(3), SynthConfig())
    found = {}
    for name, model in (("int8", path), ("float", bundled.DETECTOR_WEIGHTS)):
        boxes = YOLO(str(model), task="detect")(scene.image, imgsz=320, verbose=False)[0].boxes
        found[name] = len(boxes)
    assert found["float"] > 0 and abs(found["int8"] - found["float"]) <= 1


def test_bundled_int8_detector_runs_the_demo(tmp_path: Path) -> None:
    from edge_sameo import bundled
    from edge_sameo.cli import main as cli

    assert "FakeQuantize" in next(bundled.DETECTOR_INT8.glob("*.xml")).read_text()
    argv = ["demo", "--detector", "int8", "--frames", "3", "--out-dir", str(tmp_path), "--quiet"]
    assert cli(argv) == 0
    assert len((tmp_path / "demo.jsonl").read_text().splitlines()) == 3

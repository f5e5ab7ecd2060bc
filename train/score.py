"""Score trained models on fresh synthetic scenes: the model cards' held-out figures,
and the quality bars, on any seed (or any COCO-amodal set with ``--data``).

    python -m edge_sameo.train test --seed 31337                 # both bundled models, 300 scenes
    python -m edge_sameo.train test --seed 31337 --only nano --nano my_run/nano.pt

The nano model is scored as in its card (``train.nano``): every instance of the set
prompted with its modal box and with its amodal box, the amodal head against amodal
masks next to the visible-mask baseline (the modal head's mask taken as the amodal
one). The detector is scored as in its card (``train.detector``): box AP50 per class
and class-agnostic with ultralytics' ``val`` at the training input size. A seed that
trained or selected the model is named in a warning: those scenes are not held out.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sameo import bundled
from edge_sameo.errors import InputError

#: Quality bars of the nano model on held-out scenes of its own world, amodal masks through
#: the app's path: occluded instances (> 0.1) prompted with modal / amodal boxes, and whole
#: objects (occlusion < 0.05, modal boxes: no hidden part may be invented).
BARS = {"modal": 0.80, "amodal": 0.88, "unoccluded": 0.90}
#: The same on a second synthetic world it was never trained on (benchmarks/second_world.py).
BARS_SECOND_WORLD = {"modal": 0.70, "amodal": 0.78}
#: The detector's bar: box AP50 per class on held-out scenes.
GATE_AP50 = 0.90

NANO = bundled.NANO
DETECTOR = bundled.DETECTOR_WEIGHTS


# --------------------------------------------------------------------------- nano


def score_nano(
    model_path: Path, test_json: Path, threads: int = 1, max_images: int | None = None
) -> dict[str, Any]:
    """Through the app's path (``AmodalPredictor`` on the torch runtime: encoder, both
    decoders, the refiner when the model has one, full-size masks): the amodal masks with
    modal and with amodal box prompts, and the visible masks with modal boxes, on the
    COCO-amodal set ``test_json``."""
    import torch

    from edge_sameo.checkpoint import load_model
    from edge_sameo.data import load_amodal_coco
    from edge_sameo.predictor import AmodalPredictor
    from edge_sameo.train.validate import predictor_results, score

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_path)
    if model.modal_decoder is None:
        raise InputError(f"{model_path}: no modal decoder (the visible baseline needs one)")
    ds = load_amodal_coco(test_json)
    predictor = AmodalPredictor(model, device="cpu")
    n_img = len(ds.images) if max_images is None else min(max_images, len(ds.images))
    ids = {img.id for img in ds.images[:n_img]}
    out: dict[str, Any] = {
        "images": n_img,
        "instances": sum(1 for a in ds.annotations if a.image_id in ids),
        "refiner": model.has_refiner,
    }
    for prompt in ("modal", "amodal"):
        amodal, visible = predictor_results(predictor, ds, prompt, max_images)
        out[f"amodal_head_{prompt}_boxes"] = score(ds, amodal, "amodal")
        if prompt == "modal" and visible is not None:
            out["modal_head_modal_boxes"] = score(ds, visible, "visible")
    return out


def nano_bars(
    test: Mapping[str, Any], bars: Mapping[str, float] = BARS
) -> dict[str, tuple[float | None, float, bool]]:
    """Per bar of ``bars``: (measured figure, bar, met)."""
    keys = {
        "modal": ("amodal_head_modal_boxes", "inst_mIoU_occluded"),
        "amodal": ("amodal_head_amodal_boxes", "inst_mIoU_occluded"),
        "unoccluded": ("amodal_head_modal_boxes", "inst_mIoU_unoccluded"),
    }
    out: dict[str, tuple[float | None, float, bool]] = {}
    for name, bar in bars.items():
        head, key = keys[name]
        value = test.get(head, {}).get(key)
        out[name] = (value, bar, value is not None and value >= bar)
    return out


def nano_gate(test: Mapping[str, Any], bars: Mapping[str, float] = BARS) -> bool:
    """Every bar of ``bars`` met."""
    return all(met for _, _, met in nano_bars(test, bars).values())


def bars_line(test: Mapping[str, Any], bars: Mapping[str, float] = BARS) -> str:
    """One line: each bar with its figure and verdict."""
    names = {"modal": "occluded, modal boxes", "amodal": "occluded, amodal boxes"}
    names["unoccluded"] = "whole objects (< 0.05)"
    parts = [
        f"{names[k]} {_pct(v)} vs {100 * bar:.0f} {'met' if met else 'NOT met'}"
        for k, (v, bar, met) in nano_bars(test, bars).items()
    ]
    return "; ".join(parts)


# --------------------------------------------------------------------------- detector


def detector_test_yaml(
    folder: Path,
    count: int,
    seed: int,
    box: str = "visible",
    size: tuple[int, int] = (640, 480),
) -> Path:
    """``count`` scenes from ``seed`` in YOLO layout under ``folder``, and a data yaml whose
    validation split is all of them (ultralytics scores its "val" split)."""
    import yaml

    from edge_sameo.data import SynthConfig, export_yolo

    export_yolo(folder, count, seed, SynthConfig(size=size), val_fraction=0.0, box=box)
    spec = yaml.safe_load((folder / "data.yaml").read_text())
    spec.update(path=str(folder.resolve()), val="images/train")
    test_yaml = folder / "test.yaml"
    test_yaml.write_text(yaml.safe_dump(spec))
    return test_yaml


def score_detector(
    weights: Path, test_yaml: Path, imgsz: int, runs: Path, batch: int = 16
) -> tuple[dict[str, Any], Path | None]:
    """Box AP50 / AP50-95 per class and class-agnostic, per-class report; and the
    normalised confusion matrix ultralytics drew (None if it drew none)."""
    from ultralytics import YOLO

    from edge_sameo.safety import check_detector_file
    from edge_sameo.train.detector import offline_env, per_class_report

    check_detector_file(weights)  # before ultralytics: a .pt pickle can run code
    offline_env()

    def val(single_cls: bool) -> Any:
        # plots=True: ultralytics fills its confusion matrix only when it plots.
        return YOLO(str(weights)).val(
            data=str(test_yaml),
            split="val",
            imgsz=imgsz,
            batch=batch,
            device="cpu",
            plots=not single_cls,
            verbose=False,
            single_cls=single_cls,
            project=str(runs.resolve()),
            name="test_agnostic" if single_cls else "test",
            exist_ok=True,
        )

    metrics, agnostic = val(False), val(True)
    figure = Path(metrics.save_dir) / "confusion_matrix_normalized.png"
    result = {
        "box_AP50": float(metrics.box.map50),
        "box_AP50_95": float(metrics.box.map),
        "box_AP50_class_agnostic": float(agnostic.box.map50),
        "box_AP50_95_class_agnostic": float(agnostic.box.map),
        "per_class": per_class_report(metrics),
    }
    return result, (figure if figure.is_file() else None)


# --------------------------------------------------------------------------- both


@dataclass(frozen=True)
class ScoreConfig:
    seed: int
    out: Path
    count: int = 300
    nano: Path | None = NANO
    detector: Path | None = DETECTOR
    imgsz: int | None = None
    threads: int = 1
    #: A COCO-amodal set to score nano on instead of generating scenes from ``seed``.
    data: Path | None = None
    bars: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(BARS))

    def __post_init__(self) -> None:
        if self.count < 1:
            raise InputError(f"--count must be at least 1, got {self.count}")
        if self.data is not None and not Path(self.data).is_file():
            raise InputError(f"data set not found: {self.data}")
        if self.nano is None and self.detector is None:
            raise InputError("nothing to score: no nano model and no detector")
        if self.nano is not None and not Path(self.nano).is_file():
            raise InputError(f"model not found: {self.nano}")
        # the detector: weights, or an export folder (OpenVINO) that ultralytics loads
        if self.detector is not None and not Path(self.detector).exists():
            raise InputError(f"model not found: {self.detector}")


def _card_metrics(model: Path) -> dict[str, Any]:
    path = model.parent / "metrics.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def used_seeds(model: Path, kind: str) -> dict[int, str]:
    """Seeds that trained or selected ``model``, from the metrics.json beside it."""
    m = _card_metrics(model)
    seeds: dict[int, str] = {}
    if kind == "nano":
        data = m.get("data", {})
        for split, role in (("train", "training"), ("val", "model selection")):
            if isinstance(data.get(split), dict) and "seed" in data[split]:
                seeds[int(data[split]["seed"])] = role
    elif "seed" in m.get("config", {}):
        seeds[int(m["config"]["seed"])] = "training and model selection"
    return seeds


def detector_imgsz(weights: Path, default: int = 320) -> int:
    """The input size the detector was trained at (its metrics.json), else ``default``."""
    return int(_card_metrics(weights).get("config", {}).get("imgsz", default))


def run_scores(cfg: ScoreConfig) -> dict[str, Any]:
    """Generate the scenes (kept in ``cfg.out``; reused when there) and score."""
    from edge_sameo.data import SynthConfig, generate_dataset

    result: dict[str, Any] = {"seed": cfg.seed, "scenes": cfg.count}
    if cfg.data is not None:
        result.update(seed=None, scenes=None, data=str(cfg.data))
    for model, kind in ((cfg.nano, "nano"), (cfg.detector, "detector")):
        if model is not None and cfg.seed in used_seeds(model, kind):
            role = used_seeds(model, kind)[cfg.seed]
            print(
                f"warning: seed {cfg.seed} is the {role} seed of {model}: these scenes are "
                "not held out",
                file=sys.stderr,
            )
    if cfg.nano is not None:
        test_json = cfg.data or cfg.out / "nano_data" / "annotations.json"
        if cfg.data is None and not test_json.is_file():
            generate_dataset(test_json.parent, cfg.count, cfg.seed, SynthConfig())
        test = score_nano(cfg.nano, test_json, cfg.threads)
        result["nano"] = {
            "model": str(cfg.nano),
            **test,
            "bars": dict(cfg.bars),
            "gate_met": nano_gate(test, cfg.bars),
        }
    if cfg.detector is not None:
        imgsz = cfg.imgsz or detector_imgsz(cfg.detector)
        folder = cfg.out / "detector_data"
        test_yaml = folder / "test.yaml"
        if not test_yaml.is_file():
            test_yaml = detector_test_yaml(folder, cfg.count, cfg.seed)
        held_out, _ = score_detector(cfg.detector, test_yaml, imgsz, cfg.out / "runs")
        met = held_out["box_AP50"] >= GATE_AP50
        result["detector"] = {
            "weights": str(cfg.detector),
            "imgsz": imgsz,
            **held_out,
            "gate_met": met,
        }
    return result


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}"


def report(result: Mapping[str, Any]) -> str:
    """The figures as the model cards show them, with the gates' verdicts."""
    from edge_sameo.train.card import quality_table

    if result.get("data"):
        lines = [f"# data set: {result['data']}", ""]
    else:
        lines = [f"# fresh synthetic scenes: seed {result['seed']}, {result['scenes']} scenes", ""]
    if "nano" in result:
        n = result["nano"]
        lines += [
            f"## nano: {n['model']} ({n['images']} images, {n['instances']} instances)",
            "",
            *quality_table(n),
            "",
            f"modal head (visible masks, modal boxes): mIoU "
            f"{_pct(n['modal_head_modal_boxes'].get('inst_mIoU'))} over every instance",
            f"bars (amodal masks, app's path): {bars_line(n, n.get('bars', BARS))}",
            "",
        ]
    if "detector" in result:
        d = result["detector"]
        lines += [
            f"## detector: {d['weights']} (imgsz {d['imgsz']})",
            "",
            "| class | AP50 | ground truth | detected as itself |",
            "|---|---|---|---|",
        ]
        for name, c in d["per_class"].items():
            lines.append(f"| {name} | {_pct(c['AP50'])} | {c['ground_truth']} | {c['as_itself']} |")
        lines += [
            "",
            f"box AP50 {_pct(d['box_AP50'])} per class, {_pct(d['box_AP50_class_agnostic'])} "
            f"class-agnostic; AP50-95 {_pct(d['box_AP50_95'])} / "
            f"{_pct(d['box_AP50_95_class_agnostic'])}",
            f"gate (AP50 >= {100 * GATE_AP50:.0f} per class): "
            f"{'met' if d['gate_met'] else 'NOT met'}",
            "",
        ]
    return "\n".join(lines)

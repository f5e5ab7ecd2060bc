"""Train the bundled YOLO detector on the synthetic world with ultralytics' own trainer.

One command reproduces it::

    python -m edge_sameo.train.detector --out runs/detector

(copy the result into ``edge_sameo/models/detector`` to bundle it).

It exports the synthetic world in YOLO format (training seed), trains a YOLOv8n from
its yaml (no pretrained weights: nothing can be downloaded), evaluates box AP50 on a
*held-out* synthetic set drawn from another seed, and writes the weights, metrics and
the facts for the model card.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_sameo.errors import InputError
from edge_sameo.train.score import detector_test_yaml, score_detector


@dataclass(frozen=True)
class DetectorTrainConfig:
    """A YOLO detector training run on synthetic scenes: ``train_count`` training
    scenes of seed ``seed``, ``test_count`` held-out scenes of ``test_seed``, ultralytics'
    training settings, outputs under ``out``."""

    out: Path
    model_yaml: str = "yolov8n.yaml"
    train_count: int = 2000
    test_count: int = 300
    seed: int = 1000
    test_seed: int = 9000
    size: tuple[int, int] = (640, 480)
    imgsz: int = 320
    epochs: int = 25
    batch: int = 16
    workers: int = 2
    box: str = "visible"
    #: Continue from these weights instead of training from the yaml.
    init: Path | None = None
    #: ultralytics' optimizer; with "auto" it picks the optimizer *and* the learning
    #: rate from the schedule's length, ignoring ``lr0``.
    optimizer: str = "auto"
    lr0: float | None = None
    close_mosaic: int = 10
    #: ultralytics' image cache: "ram" keeps decoded, resized images in memory (≈ 1.2 GB for
    #: 3000 scenes at 416 px) and saves the per-batch decoding a 2-core machine pays for.
    cache: str = "no"
    #: Train for this many hours instead of ``epochs`` (ultralytics' ``time``: it re-estimates
    #: the epoch count after each epoch and fits the learning-rate schedule and the
    #: close-mosaic epochs into the budget). Validation time counts.
    hours: float | None = None
    #: ultralytics' learning-rate warm-up; its default (3 epochs) suits training from the
    #: yaml, a continuation needs less.
    warmup_epochs: float = 3.0
    #: Probability that a *training* scene also has an upright pillar occluder (the video
    #: world's static occluder, ``SynthConfig.pillars``). The held-out set stays the default
    #: world, so phases trained with and without pillars are scored on the same scenes.
    pillars: float = 0.0
    #: Average the trained weights with these (uniformly, parameter by parameter: a
    #: two-model "weight soup") before scoring and export. Only meaningful for weights the
    #: run continued from (``init``) or its relatives, which lie in the same basin.
    average_with: Path | None = None

    def __post_init__(self) -> None:
        if self.seed == self.test_seed:
            raise ValueError("the held-out test seed must differ from the training seed")
        if min(self.train_count, self.test_count, self.epochs, self.batch, self.imgsz) < 1:
            raise ValueError("counts, epochs, batch and imgsz must be positive")
        if self.lr0 is not None and self.optimizer == "auto":
            raise ValueError(
                "lr0 needs an explicit optimizer (ultralytics' 'auto' sets its own lr0)"
            )
        if self.cache not in ("no", "ram", "disk"):
            raise ValueError(f"cache must be no, ram or disk, not {self.cache!r}")
        if self.hours is not None and not self.hours > 0:
            raise ValueError(f"hours must be positive, not {self.hours}")
        if not self.warmup_epochs >= 0:
            raise ValueError(f"warmup epochs must be >= 0, not {self.warmup_epochs}")
        if not 0.0 <= self.pillars <= 1.0:
            raise ValueError(f"pillars is a probability in [0, 1], not {self.pillars}")
        if self.average_with is not None and not Path(self.average_with).is_file():
            raise ValueError(f"--average-with: no weights file at {self.average_with}")


def offline_env() -> None:
    """Set ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL`` (unless already set) for ultralytics."""
    # ultralytics must never reach the network nor pip-install extras at run time.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")


def quantize_detector(
    weights: Path,
    out: Path,
    imgsz: int = 480,
    count: int = 150,
    seed: int = 5000,
    pillars: float = 0.3,
) -> Path:
    """Post-training INT8 quantisation of a YOLO ``.pt`` into an OpenVINO export (NNCF,
    through ultralytics' exporter), calibrated on ``count`` synthetic scenes (seed ``seed``,
    never the held-out seed; the video world's pillar in ``pillars`` of them). Writes
    ``out/<name>_int8_openvino_model`` and returns it. Needs ``pip install nncf``."""
    offline_env()
    from edge_sameo.data import SynthConfig, export_yolo
    from edge_sameo.errors import MissingDependencyError
    from edge_sameo.safety import check_detector_file

    # checked before anything is written
    if not weights.is_file():
        raise InputError(f"detector weights not found: {weights}")
    if imgsz < 32 or imgsz % 32:
        raise InputError(f"--imgsz must be a multiple of 32 (the detector's stride), not {imgsz}")
    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")

    if importlib.util.find_spec("nncf") is None:  # ultralytics would pip-install it
        raise MissingDependencyError('INT8 quantisation needs NNCF: pip install "edge-sameo[int8]"')
    check_detector_file(weights)
    from ultralytics import YOLO

    out.mkdir(parents=True, exist_ok=True)
    local = out / weights.name  # ultralytics writes the export beside the weights
    if local.resolve() != weights.resolve():
        shutil.copyfile(weights, local)
    # Calibration reads the data set's validation split: the second half here.
    data = export_yolo(
        out / "calibration", 2 * count, seed, SynthConfig(pillars=pillars), val_fraction=0.5
    )
    path = YOLO(str(local)).export(format="openvino", int8=True, data=str(data), imgsz=imgsz)
    return Path(path)


def train_detector(cfg: DetectorTrainConfig) -> dict[str, Any]:
    """Generate the data, train on the CPU, (optionally average weights), score the best
    weights on the held-out scenes and export them to OpenVINO; return the figures."""
    offline_env()
    from ultralytics import YOLO

    from edge_sameo.data import SynthConfig, export_yolo

    out = cfg.out
    data_dir = out / "data" / "train"
    synth = SynthConfig(size=cfg.size, pillars=cfg.pillars)
    export_yolo(data_dir, cfg.train_count, cfg.seed, synth, val_fraction=0.1, box=cfg.box)
    test_yaml = detector_test_yaml(
        out / "data" / "test", cfg.test_count, cfg.test_seed, cfg.box, cfg.size
    )
    start = time.time()
    model = YOLO(str(cfg.init) if cfg.init else cfg.model_yaml)
    # An absolute project path: ultralytics prefixes relative ones with runs/<task>/.
    project = out.resolve() / "runs"
    model.train(
        data=str(data_dir / "data.yaml"),
        epochs=cfg.epochs,
        imgsz=cfg.imgsz,
        batch=cfg.batch,
        workers=cfg.workers,
        device="cpu",
        project=str(project),
        name="train",
        exist_ok=True,
        pretrained=cfg.init is not None,
        optimizer=cfg.optimizer,
        **({} if cfg.lr0 is None else {"lr0": cfg.lr0}),
        close_mosaic=cfg.close_mosaic,
        warmup_epochs=cfg.warmup_epochs,
        **({} if cfg.hours is None else {"time": cfg.hours}),
        cache=False if cfg.cache == "no" else cfg.cache,
        amp=False,
        plots=False,
        seed=0,
        deterministic=True,
        verbose=False,
    )
    train_s = time.time() - start
    save_dir = Path(getattr(model.trainer, "save_dir", project / "train"))
    best = save_dir / "weights" / "best.pt"
    if cfg.average_with is not None:
        best = average_weights(best, cfg.average_with, save_dir / "weights" / "averaged.pt")
    result = evaluate_detector(cfg, best, train_s, test_yaml, epochs_trained(save_dir))
    export_openvino(Path(result["weights"]), cfg.imgsz)
    return result


def average_weights(a: Path, b: Path, out: Path) -> Path:
    """Write ``out``: ultralytics checkpoint ``a`` with every floating-point tensor of its
    model (weights, biases, batch-norm statistics) replaced by the mean of ``a``'s and
    ``b``'s. Both must be the same architecture; integer buffers are kept from ``a``."""
    import torch

    from edge_sameo.safety import check_detector_file

    for path in (a, b):  # pickles: scanned against the allow-list before they load
        check_detector_file(path)
    ckpt_a = torch.load(a, map_location="cpu", weights_only=False)
    ckpt_b = torch.load(b, map_location="cpu", weights_only=False)
    model_a, model_b = ckpt_a.get("ema") or ckpt_a["model"], ckpt_b.get("ema") or ckpt_b["model"]
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError(f"cannot average {a} and {b}: their models differ in architecture")
    mean = {
        k: ((v.float() + sb[k].float()) / 2).to(v.dtype) if v.is_floating_point() else v
        for k, v in sa.items()
    }
    model_a.load_state_dict(mean)
    ckpt_a["model"], ckpt_a["ema"] = model_a, None
    ckpt_a["optimizer"] = None
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt_a, tmp)
    os.replace(tmp, out)
    return out


def export_openvino(weights: Path, imgsz: int) -> Path:
    """The app's default CPU detector: ``weights`` exported to OpenVINO beside them
    (``<stem>_openvino_model/``, fp16 weights, static ``imgsz``)."""
    offline_env()
    from ultralytics import YOLO

    folder = YOLO(str(weights)).export(format="openvino", imgsz=imgsz, half=True)
    return Path(folder)


def epochs_trained(save_dir: Path) -> int | None:
    """Epochs ultralytics finished (rows of its ``results.csv``): with ``hours`` the count is
    ultralytics' choice, not ``epochs``."""
    try:
        lines = (save_dir / "results.csv").read_text().splitlines()
    except OSError:
        return None
    return max(len([line for line in lines if line.strip()]) - 1, 0)


def evaluate_detector(
    cfg: DetectorTrainConfig,
    best: Path,
    train_s: float,
    test_yaml: Path,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Copy the best weights beside the model card and score them on the held-out set."""
    out = cfg.out
    weights = out / "yolov8n_synth.pt"
    shutil.copyfile(best, weights)
    held_out, figure = score_detector(weights, test_yaml, cfg.imgsz, out / "runs", cfg.batch)
    if figure is not None:
        shutil.copyfile(figure, out / "confusion_matrix.png")
    result = {
        "weights": str(weights),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "train_seconds": round(train_s, 1),
        "epochs_trained": epochs,
        "held_out": {"seed": cfg.test_seed, "images": cfg.test_count, **held_out},
    }
    from edge_sameo.io import atomic_write_json

    atomic_write_json(out / "metrics.json", result)
    return result


def per_class_report(metrics: Any) -> dict[str, dict[str, Any]]:
    """Per class of an ultralytics ``val`` result: AP50, ground-truth count, how many
    were detected as that class, and the classes (or "not found") the rest went to."""
    names: dict[int, str] = dict(metrics.names)
    ap50 = dict(zip((int(i) for i in metrics.box.ap_class_index), metrics.box.ap50, strict=True))
    # ultralytics: matrix[predicted, true]; the last row/column is background.
    matrix = metrics.confusion_matrix.matrix
    n = len(names)
    report: dict[str, dict[str, Any]] = {}
    for j, name in names.items():
        column = matrix[:, j]
        wrong = {
            ("not found" if i == n else names[i]): int(column[i])
            for i in range(n + 1)
            if i != j and column[i] > 0
        }
        report[name] = {
            "AP50": float(ap50[j]) if j in ap50 else None,
            "ground_truth": int(column.sum()),
            "as_itself": int(column[j]),
            "confused_with": dict(sorted(wrong.items(), key=lambda kv: -kv[1])),
        }
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The detector trainer's flags (``edge-sameo train detector`` and
    ``python -m edge_sameo.train.detector``)."""
    p.add_argument("--out", type=Path, default=Path("runs/detector"))
    p.add_argument("--train-count", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--init", type=Path, help="continue from these weights (else from the yaml)")
    p.add_argument(
        "--optimizer", default="auto", help="ultralytics optimizer (auto: its choice and lr)"
    )
    p.add_argument("--lr0", type=float, help="initial lr (needs --optimizer other than auto)")
    p.add_argument("--close-mosaic", type=int, default=10)
    p.add_argument(
        "--cache", default="no", choices=("no", "ram", "disk"), help="ultralytics image cache"
    )
    p.add_argument(
        "--hours",
        type=float,
        help="train for this long instead of --epochs (the schedule is fitted to it)",
    )
    p.add_argument("--warmup-epochs", type=float, default=3.0, help="learning-rate warm-up")
    p.add_argument(
        "--pillars",
        type=float,
        default=0.0,
        help="probability of an upright pillar occluder in a training scene (default 0)",
    )
    p.add_argument(
        "--average-with",
        type=Path,
        help="average the trained weights with these (e.g. the --init weights) before scoring",
    )


def config_from_args(args: argparse.Namespace) -> DetectorTrainConfig:
    """The :class:`DetectorTrainConfig` of parsed flags; a bad value raises ``InputError``."""
    try:
        return DetectorTrainConfig(
            out=args.out,
            train_count=args.train_count,
            epochs=args.epochs,
            imgsz=args.imgsz,
            init=args.init,
            optimizer=args.optimizer,
            lr0=args.lr0,
            close_mosaic=args.close_mosaic,
            cache=args.cache,
            hours=args.hours,
            warmup_epochs=args.warmup_epochs,
            pillars=args.pillars,
            average_with=args.average_with,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Train with the parsed flags and print the held-out figures."""
    return _train_and_report(config_from_args(args))


def _train_and_report(cfg: DetectorTrainConfig) -> int:
    print(json.dumps(train_detector(cfg)["held_out"], indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_sameo.train.detector``: train with the flags, print the held-out
    figures; return the exit code."""
    from edge_sameo.cli import Parser, run_command

    p = Parser(prog="python -m edge_sameo.train.detector", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except InputError as exc:
        p.error(str(exc))
    return run_command(lambda: _train_and_report(cfg), "train.detector")


if __name__ == "__main__":
    raise SystemExit(main())

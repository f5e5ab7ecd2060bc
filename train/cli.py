"""The training command line, shared by ``python -m edge_sameo.train`` and ``edge-sameo train``.

Subcommands: ``fit`` (a training run from YAML and/or flags), ``export`` (SAMEO decoder
checkpoint + ONNX/engines), ``bench-cache`` (the embedding cache's speed-up),
``nano`` (the bundled model's two-stage recipe, end to end) and ``test`` (score models on
fresh synthetic scenes, as their model cards do).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_sameo import bundled
from edge_sameo.precision import ENGINE_PRECISIONS

#: CLI flag -> TrainConfig field, for the flags that have their own name.
FLAG_FIELDS = {
    "out": "out",
    "train": "train",
    "val": "val",
    "model": "model",
    "init": "init",
    "base": "base",
    "mode": "mode",
    "target": "target",
    "epochs": "epochs",
    "steps_per_epoch": "steps_per_epoch",
    "batch_size": "batch_size",
    "lr": "lr",
    "seed": "seed",
    "threads": "threads",
    "device": "device",
    "cache_dir": "cache_dir",
    "amodal_box_prob": "amodal_box_prob",
}


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` subcommands (``fit``, ``export``, ``bench-cache``, ``nano``,
    ``detector``, ``detector-int8``, ``test``) to ``parser``."""
    sub = parser.add_subparsers(dest="train_command", required=True, metavar="SUBCOMMAND")

    fit = sub.add_parser(
        "fit",
        help="train (SAMEO decoder fine-tuning or full training)",
        description="Train from a YAML config and/or flags (flags win; --set key=value "
        "sets any TrainConfig field). Multi-GPU/multi-node: torchrun --nproc_per_node=N "
        "-m edge_sameo.train fit ...",
    )
    fit.add_argument("--config", type=Path, help="YAML file of TrainConfig fields")
    fit.add_argument("--out", type=Path, help="run folder (checkpoints, metrics, state)")
    fit.add_argument("--train", nargs="+", metavar="JSON", help="COCO-amodal training sets")
    fit.add_argument("--val", metavar="JSON", help="COCO-amodal validation set")
    fit.add_argument("--model", help="model config name when starting without --init")
    fit.add_argument("--init", type=Path, help="checkpoint to start from (any loadable)")
    fit.add_argument("--base", type=Path, help="base checkpoint for a SAMEO decoder --init")
    fit.add_argument("--mode", choices=("decoder", "full"), help="what is trained")
    fit.add_argument("--target", choices=("amodal", "visible"), help="mask target")
    fit.add_argument("--epochs", type=int)
    fit.add_argument("--steps-per-epoch", type=int)
    fit.add_argument("--batch-size", type=int, help="images per step (global)")
    fit.add_argument("--lr", type=float)
    fit.add_argument("--seed", type=int)
    fit.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    fit.add_argument("--device", choices=("cpu", "cuda", "auto"))
    fit.add_argument("--cache-dir", type=Path, help="prepared data + embedding cache")
    fit.add_argument("--amodal-box-prob", type=float, help="share of amodal-box prompts")
    fit.add_argument("--no-cache", action="store_true", help="encode every step")
    fit.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    fit.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config field"
    )
    fit.add_argument("--resume", action="store_true", help="continue the run in --out")
    fit.set_defaults(train_func=run_fit)

    exp = sub.add_parser(
        "export",
        help="SAMEO decoder checkpoint + ONNX (+ TensorRT engines) of a trained model",
        description="Write sameo_decoder.pt ({'decoder': ..., 'config': ...}), model.pt and "
        "onnx/ (encoder, decoder, contract). An unchanged encoder exports byte-identical, "
        "so only the decoder engine is rebuilt.",
    )
    exp.add_argument("--checkpoint", type=Path, required=True, help="trained checkpoint")
    exp.add_argument("--base", type=Path, help="base for a SAMEO decoder-only checkpoint")
    exp.add_argument("--out", type=Path, required=True, help="output folder")
    exp.add_argument("--no-onnx", action="store_true", help="checkpoints only")
    exp.add_argument("--engine", choices=ENGINE_PRECISIONS, help="also build engines")
    exp.add_argument("--opset", type=int, default=17)
    exp.add_argument("--no-check", action="store_true", help="skip the ORT/TensorRT checks")
    exp.set_defaults(train_func=run_export)

    bench = sub.add_parser(
        "bench-cache",
        help="decoder-training steps/s with the embedding cache vs encoding every step",
    )
    bench.add_argument("--config", type=Path, help="YAML file of TrainConfig fields")
    bench.add_argument("--out", type=Path, help="scratch run folder (cache lives there)")
    bench.add_argument("--train", nargs="+", metavar="JSON")
    bench.add_argument("--init", type=Path)
    bench.add_argument("--model")
    bench.add_argument("--batch-size", type=int)
    bench.add_argument("--threads", type=int)
    bench.add_argument("--cache-dir", type=Path)
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    bench.add_argument("--json", type=Path, help="also write the figures here")
    bench.set_defaults(train_func=run_bench)

    nano = sub.add_parser(
        "nano",
        help="train the bundled edge-sameo nano model (data, stage 1, stage 2, test)",
        description="Reproduce the bundled nano (edge_sameo/models/nano): synthetic data, "
        "stage 1 (encoder + modal "
        "decoder on visible masks), stage 2 (SAMEO amodal decoder on the frozen encoder), "
        "held-out test, checkpoints and metrics. Resumable: run it again to continue.",
    )
    nano.add_argument("--config", type=Path, default=Path("configs/nano.yaml"))
    nano.add_argument("--out", type=Path, help="output folder (default: the config's)")
    nano.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    nano.add_argument("--no-progress", action="store_true")
    nano.set_defaults(train_func=run_nano)

    from edge_sameo.train import detector as detector_trainer

    det = sub.add_parser(
        "detector",
        help="train the bundled YOLOv8n detector on the synthetic world",
        description=detector_trainer.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    detector_trainer.add_arguments(det)
    det.set_defaults(train_func=detector_trainer.run)

    q = sub.add_parser(
        "detector-int8",
        help="quantise a detector to INT8 (OpenVINO, NNCF) on synthetic calibration scenes",
        description="Post-training INT8 quantisation of a YOLO .pt into an OpenVINO export, "
        "calibrated on synthetic scenes; then score it with `edge-sameo train test --only "
        "detector --detector FOLDER` against the FP model (the bundled INT8 export: -0.00 "
        "held-out box AP50, edge_sameo/models/detector/MODEL_CARD.md).",
    )
    q.add_argument("--weights", type=Path, default=bundled.DETECTOR_WEIGHTS)
    q.add_argument("--out", type=Path, default=Path("runs/detector_int8"))
    q.add_argument("--imgsz", type=int, default=480)
    q.add_argument("--count", type=int, default=150, help="calibration scenes (default 150)")
    q.add_argument("--seed", type=int, default=5000, help="calibration seed (not a test seed)")
    q.set_defaults(train_func=run_quantize)

    test = sub.add_parser(
        "test",
        help="score the bundled (or any) nano model and detector on fresh synthetic scenes",
        description="Generate scenes from --seed (kept in --out, reused on a rerun) and score "
        "the nano model and the detector as their model cards do, with their quality bars; "
        "or score nano on a COCO-amodal set of your own (--data; --second-world for the bars "
        "of a world it never saw). A seed that trained or selected a model is named in a "
        "warning.",
    )
    test.add_argument("--seed", type=int, help="scene seed (pick an unseen one)")
    test.add_argument("--data", type=Path, help="score nano on this COCO-amodal annotations.json")
    test.add_argument(
        "--second-world",
        action="store_true",
        help="--data is a world nano never trained on: use its (lower) bars",
    )
    test.add_argument("--count", type=int, default=300, help="scenes (default 300)")
    test.add_argument("--nano", type=Path, default=bundled.NANO)
    test.add_argument("--detector", type=Path, default=bundled.DETECTOR_WEIGHTS)
    test.add_argument("--only", choices=("nano", "detector"), help="score one model only")
    test.add_argument("--imgsz", type=int, help="detector input (default: its training size)")
    test.add_argument("--out", type=Path, help="scenes and runs (default: out/test_seed<S>)")
    test.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    test.add_argument("--threads", type=int, default=1, help="torch CPU threads for nano")
    test.set_defaults(train_func=run_test)


def build_config(args: argparse.Namespace) -> Any:
    """TrainConfig from ``--config`` YAML, then the flags, then ``--set`` overrides."""
    from edge_sameo.train.config import TrainConfig, load_yaml, parse_overrides

    data: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    for flag, name in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[name] = value
    if getattr(args, "no_cache", False):
        data["cache"] = False
    if getattr(args, "no_progress", False):
        data["progress"] = False
    data.update(parse_overrides(args.set))
    return TrainConfig.from_mapping(data)


def run_fit(args: argparse.Namespace) -> int:
    """``train fit``: train the config of the flags; print the run folder and final figures."""
    from edge_sameo.train.trainer import fit

    cfg = build_config(args)
    summary = fit(cfg, resume=args.resume)
    final = summary.get("final", {})
    shown = {k: v for k, v in final.items() if isinstance(v, float) and "[" not in k}
    print(f"done: {cfg.out} ({summary['epochs']} epochs, {summary['elapsed_s']:.0f} s)")
    print("  " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``train export``: write the SAMEO decoder and full checkpoints, ONNX and engines
    of a trained checkpoint; print what was written."""
    from edge_sameo.train.export import TrainExportConfig, export_trained

    result = export_trained(
        TrainExportConfig(
            checkpoint=args.checkpoint,
            out=args.out,
            base=args.base,
            onnx=not args.no_onnx,
            engine=args.engine,
            opset=args.opset,
            check=not args.no_check,
        )
    )
    print(f"SAMEO decoder checkpoint: {result.sameo_decoder}")
    print(f"full checkpoint:          {result.model}")
    if result.onnx_dir is not None:
        state = {None: "first export", True: "changed", False: "unchanged (engine reused)"}
        print(f"ONNX: {result.onnx_dir} — encoder {state[result.encoder_changed]}")
    for line in result.engines:
        print(f"  {line}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """``train bench-cache``: time decoder training steps with and without the embedding
    cache; print the speed-up (and write it to ``--json``)."""
    from edge_sameo.io import atomic_write_json
    from edge_sameo.train.bench import cache_speedup

    figures = cache_speedup(build_config(args), steps=args.steps)
    print(
        f"{figures['model']} @ {figures['img_size']} px, batch {figures['batch_size']}, "
        f"{figures['threads']} threads: cache {figures['cache_steps_per_s']:.2f} steps/s, "
        f"encode every step {figures['encode_steps_per_s']:.2f} steps/s -> "
        f"x{figures['speedup']:.1f} (cache of {figures['cache_images']} images built in "
        f"{figures['cache_build_s']:.1f} s)"
    )
    if args.json is not None:
        atomic_write_json(args.json, figures)
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    """``train detector-int8``: quantise ``--weights`` to an INT8 OpenVINO export."""
    from edge_sameo.train.detector import quantize_detector

    path = quantize_detector(args.weights, args.out, args.imgsz, args.count, args.seed)
    print(f"wrote {path}")
    return 0


def run_nano(args: argparse.Namespace) -> int:
    """``train nano``: run (or resume) the nano recipe; print its test figures as JSON."""
    from edge_sameo.train.config import parse_overrides
    from edge_sameo.train.nano import NanoRecipe, run_recipe

    recipe = NanoRecipe.from_yaml(args.config, out=args.out, overrides=parse_overrides(args.set))
    if args.no_progress:
        recipe = recipe.replace(progress=False)
    result = run_recipe(recipe)
    print(json.dumps(result.get("test", {}), indent=1))
    return 0


def run_test(args: argparse.Namespace) -> int:
    """``train test``: score nano and/or the detector on fresh scenes of ``--seed`` or on
    ``--data``; print the report (and write it to ``--json``)."""
    from edge_sameo.errors import InputError
    from edge_sameo.io import atomic_write_json
    from edge_sameo.train.score import BARS, BARS_SECOND_WORLD, ScoreConfig, report, run_scores

    if (args.seed is None) == (args.data is None):
        raise InputError("give --seed (fresh synthetic scenes) or --data (a COCO-amodal set)")
    if args.data is not None and args.only != "nano":
        raise InputError("--data scores the nano model only: add --only nano")
    cfg = ScoreConfig(
        seed=-1 if args.seed is None else args.seed,
        data=args.data,
        bars=BARS_SECOND_WORLD if args.second_world else BARS,
        out=args.out
        or Path("out") / (f"test_seed{args.seed}" if args.data is None else "test_data"),
        count=args.count,
        nano=None if args.only == "detector" else args.nano,
        detector=None if args.only == "nano" else args.detector,
        imgsz=args.imgsz,
        threads=args.threads,
    )
    result = run_scores(cfg)
    print(report(result))
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed ``train`` command line."""
    return int(args.train_func(args))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge_sameo.train``: the parser and error handling of ``edge-sameo train``."""
    from edge_sameo.cli import Parser, run_command

    parser = Parser(prog="python -m edge_sameo.train", description=__doc__)
    add_subcommands(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: run(args), "train", args.train_command)

"""``edge-sameo run``: detector boxes -> amodal masks on a file, camera or network stream."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from edge_sameo.errors import InputError


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sam",
        help="EfficientSAM/SAMEO checkpoint or export folder "
        "(default: the bundled edge-sameo nano)",
    )
    p.add_argument("--base", help="base EfficientSAM checkpoint for a SAMEO decoder-only --sam")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnxruntime", "openvino", "tensorrt"],
    )
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"])
    p.add_argument(
        "--smoothing",
        type=float,
        default=None,
        help="temporal smoothing weight of the previous mask, 0 = off",
    )
    p.add_argument(
        "--persistence",
        type=int,
        default=None,
        help="frames a hidden track's amodal mask is kept, 0 = off",
    )
    p.add_argument("--sequential", action="store_true", help="run stages one after another")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="live amodal segmentation of a video, camera, stream or folder",
        description="YOLO boxes -> amodal masks per frame, with visible/occluded split, "
        "occlusion order and tracking. Writes an annotated MP4 and/or JSONL (flushed per frame).",
    )
    p.add_argument(
        "--source",
        required=True,
        help="video file, image folder, camera index, rtsp/http URL, or synth[:SEED]",
    )
    p.add_argument(
        "--detector",
        help="YOLO weights (.pt/.onnx/openvino dir/.engine), a replay "
        "file (.jsonl / COCO .json), or 'gt' for the synthetic source "
        "(default: the bundled detector)",
    )
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--classes", help="comma-separated class ids to keep")
    p.add_argument("--max-objects", type=int, default=20)
    p.add_argument("--tracker", default="bytetrack", choices=["bytetrack", "botsort", "none"])
    p.add_argument("--imgsz", type=int, default=None, help="detector input size")
    add_model_args(p)
    p.add_argument("--out", type=Path, help="annotated video (.mp4)")
    p.add_argument("--jsonl", type=Path, help="one JSON line per frame")
    p.add_argument("--coco", type=Path, help="COCO results JSON for edge-sameo eval")
    p.add_argument("--show", action="store_true", help="show a window")
    p.add_argument("--max-fps", type=float, help="pace file sources to at most this rate")
    p.add_argument("--frames", type=int, default=150, help="frames of the synthetic source")
    p.add_argument("--summary", type=Path, help="write the run summary JSON here")
    p.set_defaults(func=run)


def make_detector(spec: str | None, args: argparse.Namespace) -> Any:
    from edge_sameo.stream import GroundTruthDetector, ReplayDetector, YOLODetector
    from edge_sameo.stream.app import BUNDLED_DETECTOR

    if spec == "gt":
        return GroundTruthDetector()
    path = Path(spec) if spec else BUNDLED_DETECTOR
    if spec is None and not path.exists():
        raise InputError(f"bundled detector missing ({path}); pass --detector")
    if path.suffix in (".jsonl", ".json"):
        return ReplayDetector(path)
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    tracker = None if args.tracker == "none" else f"{args.tracker}.yaml"
    return YOLODetector(path, args.conf, classes, args.max_objects, tracker, args.imgsz)


def make_predictor(args: argparse.Namespace) -> Any:
    from edge_sameo import AmodalPredictor
    from edge_sameo.stream.app import BUNDLED_SAM

    sam = Path(args.sam) if args.sam else BUNDLED_SAM
    if not sam.exists():
        raise InputError(f"SAM checkpoint/export not found: {sam}")
    if getattr(args, "base", None):
        from edge_sameo.checkpoint import load_model

        model = load_model(sam, base=args.base)
        return AmodalPredictor(model, backend=args.backend, precision=args.precision)
    return AmodalPredictor(sam, backend=args.backend, precision=args.precision)


def stream_config(args: argparse.Namespace, defaults: tuple[float, int]) -> Any:
    from edge_sameo.stream import StreamConfig, TemporalConfig

    smoothing = defaults[0] if args.smoothing is None else args.smoothing
    persistence = defaults[1] if args.persistence is None else args.persistence
    return StreamConfig(
        pipelined=not args.sequential,
        max_fps=getattr(args, "max_fps", None),
        max_objects=getattr(args, "max_objects", 20),
        temporal=TemporalConfig(smoothing, persistence),
    )


#: Temporal defaults (smoothing, persistence), chosen by measurement (docs/BENCHMARKS.md).
TEMPORAL_DEFAULTS = (0.0, 0)


def print_summary(summary: dict[str, Any], backend: str) -> None:
    stages = ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_p50_ms"].items())
    print(
        f"{summary['frames']} frames in {summary['wall_s']} s: {summary['fps']:.1f} FPS "
        f"on {backend}; latency p50 {summary['latency_p50_ms']} ms, "
        f"p95 {summary['latency_p95_ms']} ms"
    )
    print(f"per-stage p50 ms: {stages}")
    print(
        f"dropped frames {summary['dropped_frames']}, reconnects {summary['reconnects']}, "
        f"skipped {summary['skipped_frames']}, invalid boxes {summary['invalid_boxes']}"
        + (", source truncated" if summary["truncated"] else "")
    )


def run(args: argparse.Namespace) -> int:
    from edge_sameo.io import atomic_write_json
    from edge_sameo.stream import open_source
    from edge_sameo.stream.app import Outputs, run_app

    logging.basicConfig(level=logging.WARNING, format="edge-sameo: %(message)s")
    if args.out is None and args.jsonl is None and args.coco is None and not args.show:
        raise InputError("nothing to write: give --out, --jsonl, --coco and/or --show")
    cfg = stream_config(args, TEMPORAL_DEFAULTS)
    detector = make_detector(args.detector, args)
    predictor = make_predictor(args)
    source = open_source(args.source, synth_frames=args.frames)
    print(f"source: {source.describe()}; segmenter: {predictor.backend.describe()}")
    outputs = Outputs(args.out, args.jsonl, args.coco, args.show)
    try:
        summary = run_app(source, detector, predictor, cfg, outputs)
    except KeyboardInterrupt:
        print("interrupted: every finished frame is on disk")
        raise
    print_summary(summary, predictor.backend.describe())
    if args.summary:
        atomic_write_json(args.summary, summary)
    written = [str(p) for p in (args.out, args.jsonl, args.coco) if p]
    if written:
        print("wrote " + ", ".join(written))
    if summary["truncated"]:
        print(json.dumps({"warning": "source ended early (truncated video)"}))
    return 0

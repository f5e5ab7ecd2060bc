"""``edge-sameo demo``: the whole product, offline.

Generates a synthetic occlusion video, runs the bundled models (YOLO detector + edge-sameo
nano with its modal and amodal decoders) on the fastest CPU backend, and writes
``demo.mp4`` and ``demo.jsonl`` with a summary: FPS, per-stage latency, and amodal mIoU /
mIoU_occ against the synthetic ground truth. The bundled models know the synthetic world
only, not real photos (see models/*/MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the offline demo", description=__doc__)
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="output folder (default: out)")
    p.add_argument("--frames", type=int, default=150, help="frames of the synthetic video")
    p.add_argument("--seed", type=int, default=2024, help="seed of the synthetic video")
    p.add_argument("--detector", help="override the bundled detector (or 'gt')")
    p.add_argument("--conf", type=float, default=0.25, help="detector confidence threshold")
    from edge_sameo.commands.run import add_model_args

    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from edge_sameo.commands.run import (
        TEMPORAL_DEFAULTS,
        make_detector,
        make_predictor,
        print_summary,
        stream_config,
    )
    from edge_sameo.data import SynthConfig, parse_amodal_coco
    from edge_sameo.evaluation import evaluate
    from edge_sameo.io import atomic_write_json
    from edge_sameo.stream.app import GroundTruthCollector, Outputs, run_app
    from edge_sameo.stream.sources import SyntheticVideoSource

    logging.basicConfig(level=logging.WARNING, format="edge-sameo: %(message)s")
    out: Path = args.out_dir
    args.conf, args.classes, args.max_objects, args.tracker, args.imgsz = (
        0.25,
        None,
        20,
        "bytetrack",
        None,
    )
    args.max_fps = None
    detector = make_detector(args.detector, args)
    predictor = make_predictor(args)
    source = SyntheticVideoSource(args.frames, args.seed, (640, 480), 30.0)
    synth = SynthConfig(size=(640, 480))
    categories = synth.categories
    gt = GroundTruthCollector(categories)
    names = {str(c["name"]): int(str(c["id"])) for c in categories}
    outputs = Outputs(out / "demo.mp4", out / "demo.jsonl", out / "demo_coco.json", False, names)
    print(f"demo: {source.describe()}; segmenter: {predictor.backend.describe()}")
    summary = run_app(
        source, detector, predictor, stream_config(args, TEMPORAL_DEFAULTS), outputs, gt
    )
    print_summary(summary, predictor.backend.describe())
    dataset = parse_amodal_coco(gt.doc, source="synthetic ground truth")
    # Class-agnostic, as in the SAMEO paper: the masks do not depend on the detector's class.
    report = evaluate(dataset, out / "demo_coco.json", class_agnostic=True)
    print(report.format_table())
    atomic_write_json(
        out / "demo_summary.json",
        {**summary, "backend": predictor.backend.describe(), "accuracy": report.to_dict()},
    )
    print(f"wrote {out / 'demo.mp4'}, {out / 'demo.jsonl'}, {out / 'demo_summary.json'}")
    return 0

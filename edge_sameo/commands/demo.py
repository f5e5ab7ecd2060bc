"""``edge-sameo demo``: the whole product, offline.

Generates a synthetic occlusion video, runs the bundled models (YOLO detector + edge-sameo
nano with its modal and amodal decoders) on the fastest CPU backend, and writes
``demo.mp4`` and ``demo.jsonl`` with a summary: FPS, per-stage latency, and amodal mIoU /
mIoU_occ against the synthetic ground truth. The bundled models know the synthetic world
only, not real photos (see edge_sameo/models/*/MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: What the demo writes into ``--out-dir``.
DEMO_FILES = ("demo.mp4", "demo.jsonl", "demo_coco.json", "demo_summary.json")


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the offline demo", description=__doc__)
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="output folder (default: out)")
    from edge_sameo.commands.run import (
        add_amodal_boxes_arg,
        add_detect_every_arg,
        add_model_args,
        add_serve_args,
        positive_int,
        probability,
    )

    p.add_argument("--frames", type=positive_int, default=150, help="frames of the synthetic video")
    p.add_argument("--seed", type=int, default=2024, help="seed of the synthetic video")
    p.add_argument(
        "--detector",
        help="override the bundled detector: weights or an export, 'float' / 'int8' (its "
        "float / INT8 export; default: INT8 on x86 CPUs without AVX-512, else float), 'gt' "
        "(the ground-truth boxes) or 'gt-amodal' (the ground-truth amodal boxes)",
    )
    add_amodal_boxes_arg(p)
    p.add_argument(
        "--conf", type=probability, default=0.25, help="detector confidence threshold, 0..1"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    add_detect_every_arg(p)
    add_model_args(p)
    add_serve_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sameo.commands.run import (
        DetectorOptions,
        ModelOptions,
        describe_detector,
        live_view,
        make_detector,
        make_predictor,
        print_summary,
        report,
        stream_config,
    )
    from edge_sameo.data import SynthConfig, parse_amodal_coco
    from edge_sameo.errors import Interrupted
    from edge_sameo.evaluation import evaluate
    from edge_sameo.io import atomic_write_json
    from edge_sameo.paths import check_outputs
    from edge_sameo.stream.app import GroundTruthCollector, Outputs, run_app
    from edge_sameo.stream.sources import SyntheticVideoSource

    out: Path = args.out_dir
    files = {name: out / name for name in DEMO_FILES}
    inputs = {"--detector": args.detector, "--sam": args.sam, "--base": args.base}
    check_outputs(
        {k: v for k, v in inputs.items() if v is not None and Path(v).exists()},
        {f"output {name} in --out-dir": path for name, path in files.items()},
    )
    with live_view(args) as view:
        detector = make_detector(
            args.detector, DetectorOptions(conf=args.conf, detect_every=args.detect_every)
        )
        predictor = make_predictor(ModelOptions.from_args(args))
        source = SyntheticVideoSource(args.frames, args.seed, (640, 480), 30.0)
        synth = SynthConfig(size=(640, 480))
        categories = synth.categories
        gt = GroundTruthCollector(categories)
        names = {str(c["name"]): int(str(c["id"])) for c in categories}
        outputs = Outputs(
            out / "demo.mp4",
            out / "demo.jsonl",
            out / "demo_coco.json",
            False,
            names,
            progress=not args.quiet,
        )
        if view is not None:
            view.source = source
            outputs.sinks.append(view)
        backend = predictor.backend.describe()
        described = {"backend": backend, "detector": describe_detector(args.detector)}
        print(f"demo: {source.describe()}; detector: {described['detector']}; segmenter: {backend}")
        try:
            summary = run_app(source, detector, predictor, stream_config(args), outputs, gt)
        except Interrupted as exc:
            # As ``run`` does: the frames done are on disk; no accuracy for a cut video.
            if exc.summary is not None:
                report(exc.summary, backend, out / "demo_summary.json", described)
            print("interrupted: every finished frame is on disk")
            raise
    print_summary(summary, backend)
    dataset = parse_amodal_coco(gt.doc, source="synthetic ground truth")
    # Class-agnostic, as in the SAMEO paper: the masks do not depend on the detector's class.
    accuracy = evaluate(dataset, out / "demo_coco.json", class_agnostic=True)
    print(accuracy.format_table())
    atomic_write_json(
        out / "demo_summary.json",
        {**summary, **described, "accuracy": accuracy.to_dict()},
    )
    print(f"wrote {out / 'demo.mp4'}, {out / 'demo.jsonl'}, {out / 'demo_summary.json'}")
    return 0

"""Does temporal smoothing / persistence improve amodal accuracy on the synthetic video?

Runs the stream on synthetic clips (held-out seeds) with the ground-truth detector (so
only the segmenter and the temporal filter differ) for several temporal settings, and
scores each against the ground truth with ``edge-sameo eval``'s metrics (AP, mIoU,
mIoU_occ). Usage::

    python benchmarks/temporal_eval.py --sam models/nano/edge_sameo_nano.pt --clips 3 --frames 90
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_sameo import AmodalPredictor
from edge_sameo.data import SynthConfig, parse_amodal_coco
from edge_sameo.evaluation import evaluate
from edge_sameo.stream import GroundTruthDetector, StreamConfig, TemporalConfig, stream
from edge_sameo.stream.app import GroundTruthCollector
from edge_sameo.stream.sinks import CocoResultsSink
from edge_sameo.stream.sources import SyntheticVideoSource

SETTINGS = {
    "off": TemporalConfig(0.0, 0),
    "smooth 0.3": TemporalConfig(0.3, 0),
    "smooth 0.5": TemporalConfig(0.5, 0),
    "persist 8": TemporalConfig(0.0, 8),
    "smooth 0.3 + persist 8": TemporalConfig(0.3, 8),
    "persist 30": TemporalConfig(0.0, 30),
    "persist 60": TemporalConfig(0.0, 60),
}


def score(
    sam: str, backend: str, temporal: TemporalConfig, seeds: list[int], frames: int
) -> dict[str, Any]:
    categories = SynthConfig(size=(640, 480)).categories
    names = {str(c["name"]): int(c["id"]) for c in categories}
    gt = GroundTruthCollector(categories)
    sink = CocoResultsSink(Path("/dev/null"), names)
    predictor = AmodalPredictor(sam, backend=backend)
    offset = 0
    for seed in seeds:
        source = SyntheticVideoSource(frames, seed, (640, 480))
        for r in stream(source, GroundTruthDetector(), predictor, StreamConfig(temporal=temporal)):
            # frames of all clips are numbered one after another
            r.frame = type(r.frame)(
                r.frame.index + offset, r.frame.timestamp, r.frame.image, r.frame.ground_truth
            )
            gt(r)
            sink.add(r.index, [o.to_json() for o in r.objects])
        offset += frames
    report = evaluate(parse_amodal_coco(gt.doc, source="synthetic video"), sink.results)
    d = report.to_dict()
    return {k: d[k] for k in ("AP", "AP50", "mIoU", "mIoU_occ")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sam", required=True)
    p.add_argument("--backend", default="auto")
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--json", type=Path, default=Path("out/temporal_eval.json"))
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = p.parse_args()
    seeds = [7000 + i for i in range(args.clips)]
    rows = {
        name: score(args.sam, args.backend, cfg, seeds, args.frames)
        for name, cfg in SETTINGS.items()
        if name in args.settings
    }
    print("| setting | AP | AP50 | mIoU | mIoU_occ |\n|---|---|---|---|---|")
    for name, r in rows.items():
        cells = " | ".join(
            "-" if r[k] is None else f"{100 * r[k]:.1f}" for k in ("AP", "AP50", "mIoU", "mIoU_occ")
        )
        print(f"| {name} | {cells} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"seeds": seeds, "frames": args.frames, "results": rows}, indent=1)
    )


if __name__ == "__main__":
    main()

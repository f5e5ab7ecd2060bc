"""End-to-end FPS of the bundled pipeline at 640x480: pipelined vs sequential, per stage.

Usage (bundled models, fastest CPU backend, synthetic clip with up to 6 objects)::

    python benchmarks/stream_fps.py --frames 150 [--detector gt] [--backend openvino]

Both modes run in one process on the same clip, so their ratio is measured in one run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_sameo import AmodalPredictor, bundled
from edge_sameo.backends.registry import create_backend
from edge_sameo.engines.on_demand import on_demand
from edge_sameo.stream import StreamConfig
from edge_sameo.stream.app import Outputs, run_app
from edge_sameo.stream.sources import SyntheticVideoSource


def make_detector(spec: str) -> Any:
    """``gt``: ground-truth boxes (no detector cost); ``WEIGHTS+gt``: run the YOLO (its
    full cost) but hand on the ground-truth boxes, so every frame carries all its objects
    (up to 6) whatever the detector's recall; else the YOLO alone."""
    from edge_sameo.stream import GroundTruthDetector, YOLODetector

    if spec == "gt":
        return GroundTruthDetector()
    if spec.endswith("+gt"):
        yolo, gt = YOLODetector(spec[: -len("+gt")], max_det=6), GroundTruthDetector()

        def both(frame: Any) -> Any:
            yolo(frame)
            return gt(frame)

        both.names = gt.names  # type: ignore[attr-defined]
        return both
    return YOLODetector(spec, max_det=6)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sam", default=str(bundled.NANO))
    p.add_argument("--detector", default=str(bundled.DETECTOR))
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--write", action="store_true", help="also write MP4 + JSONL (render stage)")
    p.add_argument("--json", type=Path, default=Path("out/stream_fps.json"))
    args = p.parse_args()
    # like edge-sameo run: a checkpoint is exported, engines built, on first use
    backend = create_backend(args.sam, args.backend, args.precision, **on_demand())
    predictor = AmodalPredictor(backend)
    rows = {}
    for mode in ("sequential", "pipelined"):
        detector = make_detector(args.detector)
        source = SyntheticVideoSource(args.frames, args.seed, (640, 480))
        out = Path("out/stream_fps")
        outputs = Outputs(out / f"{mode}.mp4", out / f"{mode}.jsonl") if args.write else Outputs()
        cfg = StreamConfig(pipelined=mode == "pipelined", max_objects=6)
        rows[mode] = run_app(source, detector, predictor, cfg, outputs)
        s = rows[mode]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in s["stage_p50_ms"].items())
        print(f"{mode}: {s['fps']:.1f} FPS, latency p50 {s['latency_p50_ms']} ms; {stages}")
    ratio = rows["pipelined"]["fps"] / max(rows["sequential"]["fps"], 1e-9)
    print(f"pipelined / sequential FPS: {ratio:.2f}; segmenter {predictor.backend.describe()}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"backend": predictor.backend.describe(), "ratio": ratio, **rows}, indent=1)
    )


if __name__ == "__main__":
    main()

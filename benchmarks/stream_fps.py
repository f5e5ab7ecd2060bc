"""End-to-end FPS and latency of the bundled pipeline at 640x480, per stage, for an unpaced
source (sequential and pipelined: every frame, as fast as it goes) and a source paced in real
time (``--paced-fps``, the latency policy: newest frames first).

Usage (bundled models, fastest CPU backend, synthetic clip with up to 6 objects)::

    python benchmarks/stream_fps.py --frames 150 --rounds 2 [--detector gt] [--backend openvino]

Every mode runs in one process on the same clip, taken in turn ``--rounds`` times, so their
ratios are measured in one run; each row reports steady FPS (after the first frame), the
first frame's set-up time and latency p50 / p95 (medians over the rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    # the app's choice for this CPU (INT8 on x86 without AVX-512)
    p.add_argument("--detector", default=str(bundled.default_detector()[0]))
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--write", action="store_true", help="also write MP4 + JSONL (render stage)")
    p.add_argument("--paced-fps", type=float, default=30.0, help="the paced source's rate")
    p.add_argument("--rounds", type=int, default=1, help="every mode in turn, this many times")
    p.add_argument("--json", type=Path, default=Path("out/stream_fps.json"))
    args = p.parse_args()
    # like edge-sameo run: a checkpoint is exported, engines built, on first use
    backend = create_backend(args.sam, args.backend, args.precision, **on_demand())
    predictor = AmodalPredictor(backend)
    modes = {
        "sequential": StreamConfig(pipelined=False, max_objects=6),
        "pipelined": StreamConfig(pipelined=True, max_objects=6),
        "paced": StreamConfig(max_fps=args.paced_fps, max_objects=6),
    }
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(max(args.rounds, 1)):
        for mode, cfg in modes.items():
            detector = make_detector(args.detector)
            source = SyntheticVideoSource(args.frames, args.seed, (640, 480))
            out = Path("out/stream_fps")
            outputs = (
                Outputs(out / f"{mode}.mp4", out / f"{mode}.jsonl") if args.write else Outputs()
            )
            s = run_app(source, detector, predictor, cfg, outputs)
            runs[mode].append(s)
            stages = ", ".join(f"{k} {v:.1f}" for k, v in s["stage_p50_ms"].items())
            print(
                f"{mode}: steady {s['steady_fps']:.1f} FPS (first frame {s['first_frame_s']} s), "
                f"latency p50 {s['latency_p50_ms']} / p95 {s['latency_p95_ms']} ms, "
                f"dropped {s['dropped_frames']}; {stages}"
            )
    rows = {mode: _medians(r) for mode, r in runs.items()}
    ratio = rows["pipelined"]["steady_fps"] / max(rows["sequential"]["steady_fps"], 1e-9)
    print(f"pipelined / sequential steady FPS: {ratio:.2f}; segmenter {backend.describe()}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"backend": backend.describe(), "ratio": ratio, "medians": rows, "runs": runs}
    args.json.write_text(json.dumps(report, indent=1))


def _medians(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Per-figure medians of several runs' summaries."""
    keys = ("steady_fps", "first_frame_s", "latency_p50_ms", "latency_p95_ms", "dropped_frames")
    return {k: float(statistics.median(s[k] for s in summaries)) for k in keys}


if __name__ == "__main__":
    main()

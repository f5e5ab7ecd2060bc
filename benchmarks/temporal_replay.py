"""The temporal filter's settings scored on demo clips, without re-running the models.

    python benchmarks/temporal_replay.py --seeds 3001,3002,3003,3004,3005 --work runs/replay \
        [--frames 150] [--detector int8] [--json out.json]

For each seed, ``edge-sameo demo`` runs once with the filter off (``--persistence 0
--no-shape-memory``; skipped when ``WORK/SEED/demo.jsonl`` exists) and writes the raw
objects; then each setting of ``SETTINGS`` replays those objects through
``edge_sameo.stream.temporal.TemporalFilter`` and is scored like the demo (class-agnostic
mask AP50, mIoU_occ, matched instances against the clip's synthetic ground truth). Prints
one row per setting (the mean over seeds, then each seed) and the filter's time per frame.
Choose settings on seeds other than the demo's own (2024, ``make demo``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_sameo.data import AmodalDataset, SynthConfig, parse_amodal_coco
from edge_sameo.evaluation import evaluate
from edge_sameo.masks import decode_rle
from edge_sameo.stream.app import GroundTruthCollector
from edge_sameo.stream.objects import ObjectResult
from edge_sameo.stream.pipeline import FrameResult
from edge_sameo.stream.sinks import CocoResultsSink
from edge_sameo.stream.sources import SyntheticVideoSource
from edge_sameo.stream.temporal import TemporalConfig, TemporalFilter

SETTINGS: dict[str, TemporalConfig] = {
    "off": TemporalConfig(),
    "persistence 30": TemporalConfig(persistence=30),
    "persistence 30 + shape memory": TemporalConfig(persistence=30, shape_memory=True),
}


def ground_truth(seed: int, frames: int) -> AmodalDataset:
    """The demo clip's ground truth, as ``edge-sameo demo`` collects it."""
    collector = GroundTruthCollector(SynthConfig(size=(640, 480)).categories)
    for frame in SyntheticVideoSource(frames, seed, (640, 480), 30.0).frames():
        collector(FrameResult(frame=frame, objects=[], timings={}))
    return parse_amodal_coco(collector.doc, source=f"demo clip {seed}")


def raw_objects(path: Path) -> list[list[ObjectResult]]:
    """Per frame (by the records' ``frame`` index; none for a frame without a record), the
    objects of a demo's JSONL."""
    by_frame: dict[int, list[ObjectResult]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        by_frame[int(record["frame"])] = [
            ObjectResult(
                o["track_id"],
                o["class_id"],
                o["class_name"],
                o["score"],
                np.asarray(o["box"], np.float32),
                decode_rle(o["amodal_rle"]),
                decode_rle(o["visible_rle"]),
            )
            for o in record["objects"]
        ]
    return [by_frame.get(i, []) for i in range(max(by_frame, default=-1) + 1)]


def replay(
    frames: list[list[ObjectResult]], config: TemporalConfig
) -> tuple[list[dict[str, Any]], float]:
    """COCO results of the filtered objects, collected as the demo collects them, and the
    filter's ms per frame."""
    filt, sink, spent = TemporalFilter(config), CocoResultsSink(Path("unused.json")), 0.0
    for i, objects in enumerate(frames):
        # the filter completes amodal masks in place: each replay starts from the raw ones
        fresh = [dataclasses.replace(o, amodal=o.amodal.copy()) for o in objects]
        t = time.perf_counter()
        out = filt.update(fresh)
        spent += time.perf_counter() - t
        sink.add(i, [o.to_json() for o in out])
    return sink.results, 1000 * spent / max(len(frames), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="3001,3002,3003,3004,3005")
    ap.add_argument("--work", type=Path, default=Path("runs/temporal_replay"))
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--detector", help="the demo's --detector (default: the bundled one)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = {}
    for seed in seeds:
        out = args.work / str(seed)
        flags = {"frames": args.frames, "detector": args.detector}
        meta = out / "replay_flags.json"
        if (out / "demo.jsonl").exists():
            if meta.exists() and json.loads(meta.read_text()) != flags:
                raise SystemExit(
                    f"{out} holds a run with other flags than {flags}; use another --work"
                )
        else:
            cmd = [
                "demo",
                "--seed",
                str(seed),
                "--frames",
                str(args.frames),
                "--persistence",
                "0",
                "--no-shape-memory",
                "--out-dir",
                str(out),
                "--quiet",
            ]
            if args.detector:
                cmd += ["--detector", args.detector]
            subprocess.run(
                [sys.executable, "-m", "edge_sameo", *cmd], check=True, stdout=subprocess.DEVNULL
            )
            meta.write_text(json.dumps(flags))
        frames = raw_objects(out / "demo.jsonl")
        data[seed] = (frames, ground_truth(seed, len(frames)))
    report: dict[str, Any] = {}
    print(
        f"{'setting':32s} {'AP50':>6s} {'mIoU_occ':>8s} {'ms/frame':>8s}  per seed (AP50/mIoU_occ)"
    )
    for name, config in SETTINGS.items():
        rows = {}
        for seed, (frames, gt) in data.items():
            results, ms = replay(frames, config)
            acc = evaluate(gt, results, class_agnostic=True).to_dict()
            rows[seed] = {
                "AP50": acc["AP50"],
                "mIoU_occ": acc["mIoU_occ"],
                "matched": acc["matched"],
                "ms_per_frame": ms,
            }
        mean = {
            k: float(np.nanmean([np.nan if r[k] is None else r[k] for r in rows.values()]))
            for k in rows[seeds[0]]
        }
        report[name] = {"mean": mean, "seeds": rows}
        per_seed = " ".join(f"{r['AP50']:.3f}/{r['mIoU_occ'] or 0:.3f}" for r in rows.values())
        print(
            f"{name:32s} {mean['AP50']:6.3f} {mean['mIoU_occ']:8.3f} "
            f"{mean['ms_per_frame']:8.2f}  {per_seed}"
        )
    if args.json:
        args.json.write_text(json.dumps({"seeds": seeds, "settings": report}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

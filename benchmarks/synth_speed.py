"""Synthetic-world generation speed on one core.

    python benchmarks/synth_speed.py [--size 640x480] [--count 300] [--seed 0]

Reports scenes per second for in-memory generation (what on-the-fly training sampling
costs), for the COCO-amodal writer (PNG + RLE + JSON, duals included) and for video frames.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edge_sameo.commands.synth import parse_size
from edge_sameo.data import (
    SynthConfig,
    generate_dataset,
    generate_scene,
    generate_video,
    iter_scenes,
)


def _rate(label: str, count: int, fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    rate = count / (time.perf_counter() - start)
    print(f"{label:<42}{rate:9.1f} /s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(640, 480))
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # One thread, as in a data-loader worker: OpenCV would otherwise use every core.
    import cv2

    cv2.setNumThreads(1)
    cfg = SynthConfig(size=args.size)
    w, h = cfg.size
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{w}x{h}, objects {cfg.objects}, 1 thread")  # fmt: skip
    generate_scene(0, cfg)  # warm-up

    def in_memory() -> None:
        # Scenes are dropped as they come, as a training loop would (keeping 300 scenes of
        # full-size masks would measure page faults instead).
        for scene in iter_scenes(args.seed, cfg, stop=args.count):
            del scene

    _rate("in-memory scenes (iter_scenes)", args.count, in_memory)
    n_disk = max(args.count // 3, 1)
    with tempfile.TemporaryDirectory() as tmp:
        _rate(
            "written scenes + duals (generate_dataset)",
            n_disk,
            lambda: generate_dataset(Path(tmp) / "img", n_disk, args.seed, cfg),
        )
        _rate(
            "video frames, MP4 (generate_video)",
            n_disk,
            lambda: generate_video(Path(tmp) / "vid", n_disk, args.seed, cfg),
        )


if __name__ == "__main__":
    main()

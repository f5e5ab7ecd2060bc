"""A strip of frames from the demo video (for the README), one PNG::

    python benchmarks/demo_strip.py --video out/demo.mp4 --frames 20,70,120 \\
        --out docs/figures/demo_strip.png

Each frame is labelled with its index; ``--scale`` shrinks the strip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray


def read_frames(video: Path, indices: list[int]) -> list[NDArray[np.uint8]]:
    """(H, W, 3) uint8 RGB frames ``indices`` of ``video`` (read in order)."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}")
    out: dict[int, NDArray[np.uint8]] = {}
    i = 0
    try:
        while len(out) < len(indices):
            ok, frame = cap.read()
            if not ok:
                break
            if i in indices:
                out[i] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()
    missing = sorted(set(indices) - set(out))
    if missing:
        raise SystemExit(f"{video} has {i} frames; missing {missing}")
    return [out[k] for k in indices]


def strip(frames: list[NDArray[np.uint8]], labels: list[str], scale: float) -> NDArray[np.uint8]:
    tiles = []
    for frame, label in zip(frames, labels, strict=True):
        f = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cv2.putText(f, label, (8, f.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3)
        cv2.putText(f, label, (8, f.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255,) * 3, 1)
        tiles.append(f)
        tiles.append(np.full((f.shape[0], 4, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--video", type=Path, default=Path("out/demo.mp4"))
    p.add_argument("--frames", default="20,70,120", help="frame indices, comma-separated")
    p.add_argument("--scale", type=float, default=0.6)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    indices = [int(x) for x in args.frames.split(",")]
    from edge_sameo.io import write_image

    image = strip(read_frames(args.video, indices), [f"frame {i}" for i in indices], args.scale)
    write_image(args.out, image)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

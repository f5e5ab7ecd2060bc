"""Outputs of a run. Every sink survives Ctrl-C or a crash: JSONL is flushed per frame, the
MP4 is finalised in ``close`` (called from ``finally``), COCO results are written
atomically at the end with every finished frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_json


class VideoSink:
    """Annotated frames to an MP4 (OpenCV, mp4v), opened at the first frame's size."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".avi", ".mkv", ".mov"):
            raise InputError(f"--out must be a video file (.mp4), got {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps if fps > 0 else 30.0
        self._writer: Any = None
        self.frames = 0

    def write(self, rgb: NDArray[np.uint8]) -> None:
        if self._writer is None:
            h, w = rgb.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self.path), fourcc, float(self.fps), (w, h))
            if not self._writer.isOpened():
                raise InputError(f"cannot write video {self.path}")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class JsonlSink:
    """One JSON line per frame, flushed as soon as it is written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = open(self.path, "w", encoding="utf-8")
        self.frames = 0

    def write(self, record: dict[str, Any]) -> None:
        assert self._f is not None
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._f.flush()
        self.frames += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class CocoResultsSink:
    """COCO results (one per object and frame, image_id = frame + 1) for ``edge-sameo eval``.
    Class names are mapped to category ids by ``categories`` when given (name -> id)."""

    def __init__(self, path: str | Path, categories: dict[str, int] | None = None) -> None:
        self.path = Path(path)
        self.categories = categories
        self.results: list[dict[str, Any]] = []

    def add(self, frame: int, objects: list[dict[str, Any]]) -> None:
        for o in objects:
            cat = o["class_id"]
            if self.categories is not None:
                cat = self.categories.get(o["class_name"], cat)
            self.results.append(
                {
                    "image_id": frame + 1,
                    "category_id": int(cat),
                    "score": o["score"],
                    "segmentation": o["amodal_rle"],
                    "visible_segmentation": o["visible_rle"],
                    "track_id": o["track_id"],
                }
            )

    def close(self) -> None:
        atomic_write_json(self.path, self.results)

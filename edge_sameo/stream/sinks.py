"""Outputs of a run. Each is written under a temporary name in its folder
(``.NAME.XXXXXXXX.part``, ``.part.mp4`` for the video) and moved onto its path by
``close(commit=True)`` once at least one frame was written. A run that fails leaves an
earlier file as it was: before its first frame nothing is kept, after it ``close(commit=False)``
keeps the ``.part`` file (the frames done) and returns its path. Every sink survives Ctrl-C,
SIGTERM or a crash: JSONL is flushed
per frame (a killed run leaves complete lines in the ``.part`` file), the MP4 is finalised
in ``close`` (called once the writing thread has ended), COCO results are written at the
end with every finished frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_json, commit_temp, temp_sibling
from edge_sameo.paths import VIDEO_EXTENSIONS


def _finish(tmp: Path | None, path: Path, frames: int, commit: bool) -> Path | None:
    """Move a finished temporary output onto ``path`` (``commit``), or keep it where it is
    and return it; drop it when it has no frame."""
    if tmp is None:
        return None
    if not frames:
        tmp.unlink(missing_ok=True)
        return None
    if not commit:
        return tmp
    commit_temp(tmp, path)
    return None


class VideoSink:
    """Annotated frames to an MP4 (OpenCV, mp4v), opened at the first frame's size.

    path: the video to write (.mp4, .avi, .mkv or .mov; else ``InputError``).
    fps: frame rate written into the container (30 when not positive).
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"--out must be a video file (.mp4), got {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps if fps > 0 else 30.0
        self._writer: Any = None
        self._tmp: Path | None = None
        self.frames = 0

    def write(self, rgb: NDArray[np.uint8]) -> None:
        """Append one frame: (H, W, 3) uint8 RGB, the size of the first frame written."""
        if self._writer is None:
            h, w = rgb.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            # OpenCV picks the container from the extension: the temporary name keeps it.
            self._tmp = temp_sibling(self.path, suffix=".part" + self.path.suffix)
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(self.fps), (w, h))
            if not self._writer.isOpened():
                raise InputError(f"cannot write video {self.path}")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self, commit: bool = True) -> Path | None:
        """Finalise the MP4; move it onto ``path`` (``commit``) or return the kept file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        kept = _finish(self._tmp, self.path, self.frames, commit)
        self._tmp = None
        return kept


class JsonlSink:
    """One JSON line per frame, flushed as soon as it is written (``path``: the .jsonl file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tmp: Path | None = temp_sibling(self.path, suffix=".part")
        self._f: IO[str] | None = open(self._tmp, "w", encoding="utf-8")
        self.frames = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (JSON-serialisable, e.g. ``FrameResult.to_json()``) as one line."""
        assert self._f is not None
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._f.flush()
        self.frames += 1

    def close(self, commit: bool = True) -> Path | None:
        """Move the lines onto ``path`` (``commit``) or return the kept file."""
        if self._f is not None:
            self._f.close()
            self._f = None
        kept = _finish(self._tmp, self.path, self.frames, commit)
        self._tmp = None
        return kept


class CocoResultsSink:
    """COCO results (one per object and frame, image_id = frame + 1) for ``edge-sameo eval``.
    Class names are mapped to category ids by ``categories`` when given (name -> id)."""

    def __init__(self, path: str | Path, categories: dict[str, int] | None = None) -> None:
        self.path = Path(path)
        self.categories = categories
        self.results: list[dict[str, Any]] = []
        self.frames = 0

    def add(self, frame: int, objects: list[dict[str, Any]]) -> None:
        """Collect the objects of 0-based frame ``frame``: the JSON records of
        ``ObjectResult.to_json()`` (``class_id``, ``class_name``, ``score``, ``track_id``,
        ``amodal_rle`` / ``visible_rle`` as COCO RLE), kept until :meth:`close`."""
        self.frames += 1
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

    def close(self, commit: bool = True) -> Path | None:
        """Write the results onto ``path`` (``commit``), or into a kept ``.part`` file whose
        path is returned."""
        if not self.frames:
            return None
        if commit:
            atomic_write_json(self.path, self.results)
            return None
        tmp = temp_sibling(self.path, suffix=".part")
        tmp.write_text(json.dumps(self.results, indent=1) + "\n", encoding="utf-8")
        return tmp

"""Detectors: anything returning boxes per frame plugs in.

* :class:`YOLODetector` — ultralytics YOLO (.pt, .onnx, OpenVINO folder or TensorRT .engine,
  as ultralytics loads them) with its own trackers (ByteTrack / BoT-SORT) for stable ids;
* :class:`ReplayDetector` — boxes read from a JSONL run log, COCO results or COCO(-amodal)
  ground truth (offline runs and tests);
* :class:`GroundTruthDetector` — the synthetic world's visible boxes and track ids;
* :class:`CallableDetector` — any ``fn(rgb) -> boxes`` or ``(boxes, scores, class_ids)``;
* :class:`KeyframeDetector` — any of them on every k-th frame, tracked boxes carried between.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError
from edge_sameo.paths import require_file
from edge_sameo.safety import check_detector_file
from edge_sameo.stream.sources import Frame


@dataclass(frozen=True)
class Detections:
    """N detections of one frame. boxes: (N, 4) float32 XYXY pixels; scores (N,) float32;
    class_ids (N,) int64; track_ids (N,) int64 (-1 where untracked)."""

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    class_ids: NDArray[np.int64]
    track_ids: NDArray[np.int64]
    names: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4):
            raise InputError(f"detector boxes must be (N, 4), got {self.boxes.shape}")
        for name in ("scores", "class_ids", "track_ids"):
            if len(getattr(self, name)) != n:
                raise InputError(
                    f"detector returned {len(getattr(self, name))} {name} for {n} boxes"
                )

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def make(
        boxes: Any,
        scores: Any = None,
        class_ids: Any = None,
        track_ids: Any = None,
        names: Mapping[int, str] | None = None,
    ) -> Detections:
        """Detections from array-likes: boxes reshaped to (N, 4) float32 XYXY pixels;
        missing scores are 1, class ids 0, track ids -1."""
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        n = len(b)
        return Detections(
            b,
            np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32).reshape(n),
            np.zeros(n, np.int64)
            if class_ids is None
            else np.asarray(class_ids, np.int64).reshape(n),
            np.full(n, -1, np.int64)
            if track_ids is None
            else np.asarray(track_ids, np.int64).reshape(n),
            dict(names or {}),
        )

    def select(self, keep: NDArray[np.bool_]) -> Detections:
        """The detections where the (N,) bool ``keep`` is true."""
        return Detections(
            self.boxes[keep],
            self.scores[keep],
            self.class_ids[keep],
            self.track_ids[keep],
            self.names,
        )


class Detector(Protocol):
    """A frame's detector: ``detector(frame)`` -> :class:`Detections` in the frame's
    pixels; ``names`` maps class ids to names."""

    names: Mapping[int, str]

    def __call__(self, frame: Frame) -> Detections: ...


def from_ultralytics(result: Any, names: Mapping[int, str]) -> Detections:
    """Adapter for an ultralytics ``Results`` (duck-typed: ``.boxes.xyxy/.conf/.cls/.id``)."""
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return Detections.make(np.zeros((0, 4)), names=names)

    def arr(x: Any) -> NDArray[Any]:
        return np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x)

    ids = None if getattr(boxes, "id", None) is None else arr(boxes.id)
    return Detections.make(arr(boxes.xyxy), arr(boxes.conf), arr(boxes.cls), ids, names)


class YOLODetector:
    """ultralytics YOLO with confidence/class filters, max objects and optional tracking."""

    def __init__(
        self,
        weights: str | Path,
        conf: float = 0.25,
        classes: Sequence[int] | None = None,
        max_det: int = 50,
        tracker: str | None = "bytetrack.yaml",
        imgsz: int | None = None,
    ) -> None:
        # ultralytics must never reach the network nor pip-install at run time.
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
        path = Path(weights)
        if not path.exists():
            raise InputError(f"detector weights not found: {path}")
        check_detector_file(path)  # before ultralytics: a .pt pickle can run code
        from ultralytics import YOLO

        try:
            self.model = YOLO(str(path), task="detect")
        except Exception as exc:  # ultralytics raises many types for a bad file
            raise InputError(f"cannot load detector {path}: {type(exc).__name__}: {exc}") from None
        self.names: Mapping[int, str] = dict(getattr(self.model, "names", {}) or {})
        self.kwargs: dict[str, Any] = {"conf": conf, "max_det": max_det, "verbose": False}
        if classes is not None:
            self.kwargs["classes"] = list(classes)
        if imgsz:
            self.kwargs["imgsz"] = imgsz
        self.tracker = tracker

    def __call__(self, frame: Frame) -> Detections:
        bgr = np.ascontiguousarray(frame.image[..., ::-1])  # ultralytics takes BGR arrays
        if self.tracker:
            results = self.model.track(bgr, persist=True, tracker=self.tracker, **self.kwargs)
        else:
            results = self.model.predict(bgr, **self.kwargs)
        return from_ultralytics(results[0], self.names)


class ReplayDetector:
    """Boxes per frame from a file: an ``edge-sameo run`` JSONL log, COCO results, or a COCO
    (-amodal) ground truth (frames matched by ``frame_index``, else ``image_id - 1``)."""

    def __init__(self, path: str | Path, box: str = "visible") -> None:
        self.path = require_file(path, "replay file")
        self.by_frame: dict[int, list[tuple[list[float], float, int, int]]] = {}
        self.names: dict[int, str] = {}
        text = self.path.read_text()
        try:
            if self.path.suffix == ".jsonl":
                self._from_jsonl(text)
            else:
                self._from_coco(json.loads(text), box)
        except InputError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{self.path}: not a readable box file ({exc})") from None

    def _from_jsonl(self, text: str) -> None:
        for line in text.splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            for o in rec["objects"]:
                self.names[int(o["class_id"])] = str(o.get("class_name", o["class_id"]))
                self.by_frame.setdefault(int(rec["frame"]), []).append(
                    (
                        list(o["box"]),
                        float(o.get("score", 1.0)),
                        int(o["class_id"]),
                        int(o.get("track_id", -1)),
                    )
                )

    def _from_coco(self, doc: Any, box: str) -> None:
        if not isinstance(doc, dict):  # COCO results: a list of detections, frames by image id
            self._from_boxes(doc, {}, box)
        elif all("segmentation" in a for a in doc.get("annotations") or []):
            self._from_ground_truth(doc, box)
        else:
            try:  # a plain COCO ground truth with boxes only
                frames = {
                    int(img["id"]): int(img["id"]) - 1
                    if img.get("frame_index") is None
                    else int(img["frame_index"])
                    for img in doc["images"]
                }
                self.names.update({int(c["id"]): str(c["name"]) for c in doc.get("categories", [])})
                self._from_boxes(doc["annotations"], frames, box)
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(
                    f"{self.path}: not a COCO ground truth with boxes ({exc!r})"
                ) from None

    def _from_ground_truth(self, doc: dict[str, Any], box: str) -> None:
        """A COCO(-amodal) ground truth, read and checked by ``parse_amodal_coco``: the boxes
        of the visible masks (``box="visible"``, where the file has them), else of the amodal
        masks."""
        from edge_sameo.data.coco_amodal import parse_amodal_coco
        from edge_sameo.masks import rle_xywh

        dataset = parse_amodal_coco(doc, source=str(self.path), require_visible=False)
        self.names.update({int(c["id"]): str(c["name"]) for c in dataset.categories})
        for a in dataset.annotations:
            img = dataset.image(a.image_id)
            frame = int(img.frame_index) if img.frame_index is not None else img.id - 1
            mask = a.visible if box == "visible" and a.visible is not None else a.segmentation
            score = float(a.extra.get("score", 1.0))
            track = -1 if a.track_id is None else a.track_id
            self._add(frame, rle_xywh(mask), score, a.category_id, track)

    def _from_boxes(self, anns: list[dict[str, Any]], frames: dict[int, int], box: str) -> None:
        """XYWH pixel boxes: ``visible_bbox`` where an entry has it and ``box="visible"``,
        else ``bbox``; frames by image id (``image_id - 1`` where ``frames`` has none)."""
        for a in anns:
            key = "visible_bbox" if box == "visible" and "visible_bbox" in a else "bbox"
            image_id = int(a["image_id"])
            self._add(
                frames.get(image_id, image_id - 1),
                [float(v) for v in a[key]],
                float(a.get("score", 1.0)),
                int(a["category_id"]),
                int(a.get("track_id", -1)),
            )

    def _add(self, frame: int, xywh: list[float], score: float, class_id: int, track: int) -> None:
        """One XYWH pixel box of ``frame``; an empty one (fully hidden) is no detection."""
        x, y, w, h = xywh
        if w <= 0 or h <= 0:
            return
        self.by_frame.setdefault(frame, []).append(([x, y, x + w, y + h], score, class_id, track))

    def __call__(self, frame: Frame) -> Detections:
        rows = self.by_frame.get(frame.index, [])
        if not rows:
            return Detections.make(np.zeros((0, 4)), names=self.names)
        boxes, scores, classes, tracks = zip(*rows, strict=True)
        return Detections.make(boxes, scores, classes, tracks, self.names)


class GroundTruthDetector:
    """The synthetic world's visible (modal) boxes with their track ids — what a perfect
    detector would report; fully hidden objects are not detected. With ``amodal`` the same
    objects' amodal boxes (their whole extent), as a perfect amodal detector would report."""

    def __init__(self, names: Mapping[int, str] | None = None, amodal: bool = False) -> None:
        from edge_sameo.data import CLASS_NAMES

        self.names = dict(names or {i + 1: n for i, n in enumerate(CLASS_NAMES)})
        self.amodal = amodal

    def __call__(self, frame: Frame) -> Detections:
        from edge_sameo.masks import mask_to_box

        if frame.ground_truth is None:
            raise InputError(
                "the ground-truth detector needs the synthetic source (--source synth)"
            )
        rows = [
            (
                mask_to_box(inst.amodal if self.amodal else inst.visible),
                inst.category_id,
                inst.track_id,
            )
            for inst in frame.ground_truth.instances
            if inst.visible.any()
        ]
        if not rows:
            return Detections.make(np.zeros((0, 4)), names=self.names)
        boxes, classes, tracks = zip(*rows, strict=True)
        return Detections.make(np.stack(boxes), None, classes, tracks, self.names)


class KeyframeDetector:
    """Run ``inner`` on key frames only, every ``every``-th frame; in between, each box moves
    on at its track's velocity between its last two key frames, measured on the frames'
    timestamps (a live source's dropped frames count as the time they took). Boxes without
    a track id, or new on the last key frame, stay where they were; a box carried off the
    frame is dropped and makes the next frame a key frame. The detector's cost per frame
    falls about ``every``-fold; a new object waits at most ``every - 1`` frames."""

    def __init__(self, inner: Detector, every: int) -> None:
        if every < 1:
            raise InputError(f"--detect-every must be >= 1, got {every}")
        self.inner, self.every = inner, every
        self.names = inner.names
        self._last: Detections | None = None
        self._key_index, self._key_time = 0, 0.0
        self._velocity = np.zeros((0, 4), np.float32)  # px per second
        self._previous: dict[int, tuple[float, NDArray[np.float32]]] = {}
        self._redetect = False

    def __call__(self, frame: Frame) -> Detections:
        gap = frame.index - self._key_index
        if self._last is None or gap >= self.every or gap < 0 or self._redetect:
            return self._key(frame)
        det = self._last
        boxes = det.boxes + self._velocity * (frame.timestamp - self._key_time)
        h, w = frame.image.shape[:2]
        gone = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 1] >= h)
        self._redetect = bool(gone.any())
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        carried = Detections(boxes, det.scores, det.class_ids, det.track_ids, det.names)
        return carried.select(~gone)

    def _key(self, frame: Frame) -> Detections:
        det = self.inner(frame)
        t = frame.timestamp
        velocity = np.zeros((len(det), 4), np.float32)
        seen: dict[int, tuple[float, NDArray[np.float32]]] = {}
        for i, tid in enumerate(det.track_ids.tolist()):
            if tid < 0:
                continue
            if tid in self._previous:
                then, box = self._previous[tid]
                if t > then:
                    velocity[i] = (det.boxes[i] - box) / (t - then)
            seen[tid] = (t, det.boxes[i].copy())
        self._previous = seen
        self._last, self._velocity = det, velocity
        self._key_index, self._key_time, self._redetect = frame.index, t, False
        return det


class CallableDetector:
    """Wrap ``fn(rgb) -> boxes`` or ``-> (boxes, scores, class_ids)``."""

    def __init__(
        self, fn: Callable[[NDArray[np.uint8]], Any], names: Mapping[int, str] | None = None
    ) -> None:
        self.fn = fn
        self.names = dict(names or {})

    def __call__(self, frame: Frame) -> Detections:
        out = self.fn(frame.image)
        if isinstance(out, Detections):
            return out
        if isinstance(out, tuple):
            boxes, scores, classes = (*tuple(out), None, None)[:3]
            return Detections.make(boxes, scores, classes, names=self.names)
        return Detections.make(out, names=self.names)

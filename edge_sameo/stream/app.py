"""The application around :func:`stream`: a render/write stage in its own thread, the run
summary (FPS, per-stage latency, drops, reconnects), and ground-truth scoring for the
synthetic source. Used by ``edge-sameo run`` and ``edge-sameo demo``."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sameo.predictor import AmodalPredictor
from edge_sameo.stream.annotate import annotate
from edge_sameo.stream.detectors import Detector
from edge_sameo.stream.pipeline import FrameResult, StreamConfig, stream
from edge_sameo.stream.sinks import CocoResultsSink, JsonlSink, VideoSink
from edge_sameo.stream.sources import FrameSource

log = logging.getLogger(__name__)

#: The bundled models, relative to a clone of the repository.
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_SAM = REPO_ROOT / "models" / "nano" / "nano.pt"
#: The OpenVINO export of the same weights (fp16 weights): the faster one on CPUs.
BUNDLED_DETECTOR = REPO_ROOT / "models" / "detector" / "yolov8n_synth_openvino_model"


@dataclass
class Outputs:
    """Where a run writes; every sink is closed (finalised) even on Ctrl-C or a crash."""

    video: Path | None = None
    jsonl: Path | None = None
    coco: Path | None = None
    show: bool = False
    categories: dict[str, int] | None = None


class Writer:
    """The render/write stage: annotate, then MP4, JSONL (flushed per frame), COCO, window."""

    def __init__(self, outputs: Outputs, fps: float) -> None:
        self.video = VideoSink(outputs.video, fps) if outputs.video else None
        self.jsonl = JsonlSink(outputs.jsonl) if outputs.jsonl else None
        self.coco = CocoResultsSink(outputs.coco, outputs.categories) if outputs.coco else None
        self.show = outputs.show
        self.render_ms: list[float] = []

    def __call__(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        record = result.to_json()
        if self.video is not None or self.show:
            frame = annotate(result.frame.image, result.objects, result.fps)
            if self.video is not None:
                self.video.write(frame)
            if self.show:
                self._show(frame)
        if self.jsonl is not None:
            self.jsonl.write(record)
        if self.coco is not None:
            self.coco.add(result.index, record["objects"])
        self.render_ms.append((time.perf_counter() - t0) * 1e3)

    def _show(self, rgb: np.ndarray) -> None:
        import cv2

        try:
            cv2.imshow("edge-sameo", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.waitKey(1)
        except cv2.error:
            log.warning("--show: no display available; continuing without a window")
            self.show = False

    def close(self) -> None:
        for sink in (self.video, self.jsonl, self.coco):
            if sink is not None:
                sink.close()


@dataclass
class RunStats:
    frames: int = 0
    objects: int = 0
    invalid_boxes: int = 0
    wall_s: float = 0.0
    stages: dict[str, list[float]] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)

    def add(self, r: FrameResult) -> None:
        self.frames += 1
        self.objects += len(r.objects)
        self.invalid_boxes += r.invalid_boxes
        self.latency_ms.append(r.latency_ms)
        for k, v in r.timings.items():
            self.stages.setdefault(k, []).append(v)

    def summary(self, source: FrameSource, render_ms: list[float]) -> dict[str, Any]:
        stages = dict(self.stages)
        if render_ms:
            stages["render_write"] = render_ms
        return {
            "frames": self.frames,
            "fps": self.frames / self.wall_s if self.wall_s else 0.0,
            "wall_s": round(self.wall_s, 2),
            "objects_per_frame": self.objects / max(self.frames, 1),
            "stage_p50_ms": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
            "latency_p50_ms": round(float(np.median(self.latency_ms)), 1) if self.latency_ms else 0,
            "latency_p95_ms": round(float(np.percentile(self.latency_ms, 95)), 1)
            if self.latency_ms
            else 0,
            "dropped_frames": source.dropped,
            "reconnects": source.reconnects,
            "skipped_frames": source.skipped,
            "truncated": source.truncated,
            "invalid_boxes": self.invalid_boxes,
        }


def run_app(
    source: FrameSource,
    detector: Detector,
    predictor: AmodalPredictor,
    config: StreamConfig,
    outputs: Outputs,
    on_result: Any = None,
) -> dict[str, Any]:
    """Run the stream to its end (or Ctrl-C); returns the summary. ``on_result`` sees
    each :class:`FrameResult` in order (e.g. to collect ground truth)."""
    writer = Writer(outputs, source.fps or 30.0)
    stats = RunStats()
    q: queue.Queue[Any] = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def drain() -> None:
        while True:
            item = q.get()
            if item is None:
                return
            try:
                writer(item)
            except BaseException as exc:
                failure.append(exc)
                return

    thread = threading.Thread(target=drain, name="render-write", daemon=True)
    if config.pipelined:
        thread.start()
    t0 = time.perf_counter()
    results: Iterator[FrameResult] = stream(source, detector, predictor, config)
    try:
        for result in results:
            stats.add(result)
            if on_result is not None:
                on_result(result)
            if config.pipelined:
                if failure:
                    raise failure[0]
                q.put(result)
            else:
                writer(result)
    finally:
        if config.pipelined:
            q.put(None)
            thread.join()
        stats.wall_s = time.perf_counter() - t0
        writer.close()
        if hasattr(results, "close"):
            results.close()
    if failure:
        raise failure[0]
    return stats.summary(source, writer.render_ms)


class GroundTruthCollector:
    """Collects the synthetic frames' ground truth as a COCO-amodal document."""

    def __init__(self, categories: list[dict[str, Any]]) -> None:
        self.doc: dict[str, Any] = {"images": [], "annotations": [], "categories": categories}

    def __call__(self, result: FrameResult) -> None:
        from edge_sameo.data import annotation_record

        scene = result.frame.ground_truth
        if scene is None:
            return
        h, w = result.frame.image.shape[:2]
        image_id = result.index + 1
        self.doc["images"].append(
            {
                "id": image_id,
                "width": w,
                "height": h,
                "file_name": f"frame_{result.index:06d}",
                "video_id": 1,
                "frame_index": result.index,
            }
        )
        for inst in scene.instances:
            if not inst.amodal.any():
                continue
            self.doc["annotations"].append(
                annotation_record(
                    len(self.doc["annotations"]) + 1,
                    image_id,
                    inst.category_id,
                    inst.amodal,
                    inst.visible,
                    inst.track_id,
                )
            )

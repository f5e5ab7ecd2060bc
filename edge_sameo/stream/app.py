"""The application around :func:`stream`: the outputs its last stage
(:class:`~edge_sameo.stream.pipeline.WriteStage`) renders and writes, the run summary (FPS,
per-stage latency, drops, reconnects), a progress line, and ground-truth scoring for the
synthetic source. Used by ``edge-sameo run`` and ``edge-sameo demo``.

Shutdown is ordered on every path (end, error, Ctrl-C, SIGTERM): the stream's stages and
source stop and are joined, then the render/write thread finishes what it was handed, then
the outputs are finalised."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from edge_sameo.annotators import STREAM_RENDERER
from edge_sameo.errors import InputError, Interrupted
from edge_sameo.predictor import AmodalPredictor
from edge_sameo.stream.detectors import Detector
from edge_sameo.stream.memory import TRIM_EVERY, release_free_memory
from edge_sameo.stream.pipeline import FrameResult, StreamConfig, WriteStage, stream
from edge_sameo.stream.sinks import CocoResultsSink, JsonlSink, VideoSink
from edge_sameo.stream.sources import FrameSource

log = logging.getLogger(__name__)


class ResultSink(Protocol):
    """Any further consumer of results (a recording, a live view), handed every frame by
    the render/write stage in order and closed once, on every path, like the built-in
    sinks. ``wants_image``: the sink needs the annotated frame, so it is drawn for it."""

    wants_image: bool

    def write(
        self, result: FrameResult, record: dict[str, Any], annotated: NDArray[np.uint8] | None
    ) -> None:
        """``record``: the JSONL record of ``result``; ``annotated``: (H, W, 3) uint8 RGB, or
        None when ``wants_image`` is false."""

    def close(self, commit: bool = True) -> Path | None:
        """Finalise; for a failed run (``commit`` false) return a kept partial file, if any."""


@dataclass
class Outputs:
    """Where a run writes; every sink is closed (finalised) even on Ctrl-C or a crash.
    ``progress``: frames and FPS on stderr while the run goes. ``sinks``: further
    consumers (:class:`ResultSink`), e.g. a recording or a live view."""

    video: Path | None = None
    jsonl: Path | None = None
    coco: Path | None = None
    show: bool = False
    categories: dict[str, int] | None = None
    progress: bool = False
    sinks: list[ResultSink] = field(default_factory=list)


class Progress:
    """Frames and FPS on stderr: a tqdm bar on a terminal, else (a log file, a service
    manager's journal) a plain line every ``every_s`` seconds."""

    def __init__(self, total: int | None, every_s: float = 10.0) -> None:
        self.total, self.every_s = total, every_s
        self.frames = 0
        self.start = self.last = time.monotonic()
        self.bar: tqdm[Any] | None = None
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, unit="frame", file=sys.stderr, leave=False)

    def update(self) -> None:
        """Count one frame; advance the bar, or print a line when ``every_s`` has passed."""
        self.frames += 1
        if self.bar is not None:
            self.bar.update()
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            of = f"/{self.total}" if self.total else ""
            fps = self.frames / max(now - self.start, 1e-9)
            print(f"edge-sameo: {self.frames}{of} frames, {fps:.1f} FPS", file=sys.stderr)

    def close(self) -> None:
        """Close the bar, if any."""
        if self.bar is not None:
            self.bar.close()


class Writer:
    """The render/write stage: annotate, then MP4, JSONL (flushed per frame), COCO, window,
    progress."""

    def __init__(self, outputs: Outputs, fps: float, total: int | None = None) -> None:
        self.video = VideoSink(outputs.video, fps) if outputs.video else None
        self.jsonl = JsonlSink(outputs.jsonl) if outputs.jsonl else None
        self.coco = CocoResultsSink(outputs.coco, outputs.categories) if outputs.coco else None
        self.show = outputs.show
        self.sinks = list(outputs.sinks)
        self.progress = Progress(total) if outputs.progress else None
        self.render_ms: list[float] = []

    def __call__(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        record = result.to_json()
        frame: NDArray[np.uint8] | None = None
        if self.video is not None or self.show or any(s.wants_image for s in self.sinks):
            frame = STREAM_RENDERER.render(result.frame.image, result.objects, result.fps)
            if self.video is not None:
                self.video.write(frame)
            if self.show:
                self._show(frame)
        for sink in self.sinks:
            sink.write(result, record, frame if sink.wants_image else None)
        if self.jsonl is not None:
            self.jsonl.write(record)
        if self.coco is not None:
            self.coco.add(result.index, record["objects"])
        if self.progress is not None:
            self.progress.update()
        self.render_ms.append((time.perf_counter() - t0) * 1e3)

    def _show(self, rgb: np.ndarray) -> None:
        import cv2

        try:
            cv2.imshow("edge-sameo", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.waitKey(1)
        except cv2.error:
            log.warning("--show: no display available; continuing without a window")
            self.show = False

    def close(self, commit: bool = True) -> None:
        """Finalise every output: moved onto its path (``commit``), or, for a run that
        failed, kept as its ``.part`` file, named in one warning (earlier files unchanged)."""
        if self.progress is not None:
            self.progress.close()
        kept: list[tuple[Path, Path | None]] = []
        failure: BaseException | None = None
        for sink in (self.video, self.jsonl, self.coco, *self.sinks):
            if sink is None:
                continue
            try:  # one sink failing to finalise must not leave the others open
                part = sink.close(commit)
            except Exception as exc:
                failure = failure or exc
                continue
            if part is not None:
                kept.append((part, getattr(sink, "path", None)))
        if kept:
            log.warning(
                "the run failed; its partial output is in %s (%s left as before)",
                ", ".join(str(part) for part, _ in kept),
                ", ".join(str(path) for _, path in kept if path is not None),
            )
        if failure is not None:
            raise failure


@dataclass
class RunStats:
    """Counts and timings of a run's frames, summed up by :meth:`summary`."""

    frames: int = 0
    objects: int = 0
    invalid_boxes: int = 0
    wall_s: float = 0.0
    #: Seconds from the start to the first result: set-up paid once (the detector's lazy
    #: initialisation, the runtimes' first calls), kept out of ``steady_fps``.
    first_s: float = 0.0
    stages: dict[str, list[float]] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)

    def add(self, r: FrameResult) -> None:
        """Count one frame result: its objects, invalid boxes, latency and stage times."""
        self.frames += 1
        self.objects += len(r.objects)
        self.invalid_boxes += r.invalid_boxes
        self.latency_ms.append(r.latency_ms)
        for k, v in r.timings.items():
            self.stages.setdefault(k, []).append(v)

    def summary(self, source: FrameSource, render_ms: list[float]) -> dict[str, Any]:
        """The run summary: frames, FPS, steady FPS, first-frame seconds, per-stage p50
        ms (with ``render_ms`` as ``render_write``), latency p50/p95 ms, and ``source``'s drops,
        reconnects, skips and end state."""
        stages = dict(self.stages)
        if render_ms:
            stages["render_write"] = render_ms
        steady_s = self.wall_s - self.first_s
        return {
            "frames": self.frames,
            "fps": self.frames / self.wall_s if self.wall_s else 0.0,
            "steady_fps": (self.frames - 1) / steady_s if self.frames > 1 and steady_s > 0 else 0.0,
            "first_frame_s": round(self.first_s, 3),
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
            "gave_up": source.gave_up,
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
    """Run the stream to its end; returns the summary. ``on_result`` sees each
    :class:`FrameResult` in order (e.g. to collect ground truth). The source is closed on
    every path. Ctrl-C or SIGTERM raises :class:`Interrupted` carrying the summary of the
    frames written; a run without a single frame raises :class:`InputError`."""
    results = stream(source, detector, predictor, config)  # refuses before any thread
    stats = RunStats()
    writer: Writer | None = None
    stage: WriteStage | None = None
    t0 = time.perf_counter()
    try:
        writer = Writer(outputs, source.fps or 30.0, source.expected_frames)
        stage = WriteStage(writer, threaded=config.pipelined, queue_size=config.queue_size)
        for result in results:
            stage.put(result)
            stats.add(result)
            if stats.frames == 1:
                stats.first_s = time.perf_counter() - t0
            if on_result is not None:
                on_result(result)
            if stats.frames % TRIM_EVERY == 0:
                release_free_memory()
    except KeyboardInterrupt as exc:
        _shutdown(results, source, stage, writer)
        if writer is not None:  # the signal may fall between handing a frame and counting it
            stats.frames = len(writer.render_ms)
        stats.wall_s = time.perf_counter() - t0
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        raise Interrupted(
            signum, stats.summary(source, writer.render_ms if writer else [])
        ) from exc
    except SystemExit:
        _shutdown(results, source, stage, writer)
        raise
    except BaseException:
        _shutdown(results, source, stage, writer, commit=False)
        raise
    late: list[int] = []
    failure = _shutdown(results, source, stage, writer, late=late)
    stats.wall_s = time.perf_counter() - t0
    if failure is not None:
        raise failure
    if stats.frames == 0:
        raise InputError(f"no readable frame in {source.describe()}")
    if late:  # Ctrl-C / SIGTERM while the outputs were finalised: they are, say so now
        raise Interrupted(late[0], stats.summary(source, writer.render_ms))
    return stats.summary(source, writer.render_ms)


def _shutdown(
    results: Any,
    source: FrameSource,
    stage: WriteStage | None,
    writer: Writer | None,
    commit: bool = True,
    late: list[int] | None = None,
) -> BaseException | None:
    """Stop and join the stream's stages and release the source, then let the writer
    finish what it was handed, then finalise the outputs: moved into place at a normal end
    or an interrupt (``commit``), kept as ``.part`` files when the run failed (an error,
    or a write failure, returned). Ctrl-C and SIGTERM wait until it is done; the signals
    that came meanwhile are appended to ``late``."""
    with _signals_deferred(late if late is not None else []):
        results.close()
        source.close()
        failure = stage.finish() if stage is not None else None
        if writer is not None:
            writer.close(commit and failure is None)
    return failure


@contextlib.contextmanager
def _signals_deferred(got: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM only noted in ``got`` inside the block (a second Ctrl-C must not
    cut the finalising of the outputs short); the main thread only, where handlers live."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, frame: Any) -> None:
        got.append(signum)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored stays ignored
            previous[signum] = signal.signal(signum, note)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


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

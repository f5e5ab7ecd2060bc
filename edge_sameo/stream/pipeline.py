"""The streaming loop: capture -> detect -> encode/decode -> (render/write, by the caller).

Stages run in threads joined by bounded queues so they overlap (``pipelined=True``), or
one after the other (``pipelined=False``, for comparison). Every frame's result carries
per-stage timings and its end-to-end latency. The Python API is a generator::

    for result in stream(source, detector, predictor):
        ...

Every path out of it — the end, an error in any stage, ``break``, Ctrl-C — stops in the
same order: signal every stage and the source to stop, join the threads, then release the
source (an OpenCV reader released under a running ``read`` crashes inside FFmpeg).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_sameo.boxes import clip_boxes
from edge_sameo.errors import InputError
from edge_sameo.predictor import AmodalPredictor
from edge_sameo.stream.detectors import Detections, Detector, GroundTruthDetector
from edge_sameo.stream.objects import ObjectResult, assign_order
from edge_sameo.stream.sources import Frame, FrameSource
from edge_sameo.stream.temporal import TemporalConfig, TemporalFilter

if TYPE_CHECKING:
    import supervision as sv

QUEUE_POLICIES = ("auto", "latency", "throughput")


@dataclass(frozen=True)
class StreamConfig:
    """How the stream loop runs: stages in threads joined by bounded queues
    (``pipelined``) or one after another, pacing, the object cap, temporal filtering and
    the queue policy."""

    pipelined: bool = True
    #: Items each queue between two stages holds (capture -> detect -> segment -> write);
    #: under the latency policy the frames' queues hold one.
    queue_size: int = 2
    #: Pace file sources to at most this rate (live sources run as fast as frames come).
    max_fps: float | None = None
    max_objects: int = 20
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    #: ``latency``: a frame that finds the detector's queue full replaces the oldest one
    #: waiting there (counted as dropped), so no frame waits behind stale ones; ``throughput``:
    #: it waits (every frame processed); ``auto``: latency for live sources and files paced
    #: by ``max_fps``, throughput for files read as fast as they go.
    queue_policy: str = "auto"
    #: The detector's boxes are amodal boxes (the whole object's extent), so the masks are
    #: cut to them (``AmodalPredictor.predict``'s ``amodal_boxes``).
    amodal_boxes: bool = False

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.max_objects < 1:
            raise InputError("queue_size and max_objects must be >= 1")
        if self.queue_policy not in QUEUE_POLICIES:
            raise InputError(f"queue policy must be one of {', '.join(QUEUE_POLICIES)}")
        if self.max_fps is not None and self.max_fps <= 0:
            raise InputError(f"--max-fps must be > 0, got {self.max_fps}")

    def drops_stale_frames(self, source: FrameSource) -> bool:
        """Whether ``source`` runs under the latency policy (see ``queue_policy``)."""
        if self.queue_policy == "auto":
            return source.live or self.max_fps is not None
        return self.queue_policy == "latency"


@dataclass
class FrameResult:
    """One processed frame: its objects, per-stage timings (ms) and end-to-end latency."""

    frame: Frame
    objects: list[ObjectResult]
    timings: dict[str, float]
    latency_ms: float = 0.0
    invalid_boxes: int = 0
    fps: float = 0.0

    @property
    def index(self) -> int:
        """The frame's index in its source."""
        return self.frame.index

    def to_json(self) -> dict[str, Any]:
        """The JSONL record: frame, timestamp, objects (masks as COCO RLE, boxes XYXY)."""
        return {
            "frame": self.frame.index,
            "timestamp": round(self.frame.timestamp, 4),
            "objects": [o.to_json() for o in self.objects],
            "timings_ms": {k: round(v, 2) for k, v in self.timings.items()},
            "latency_ms": round(self.latency_ms, 2),
        }

    def to_supervision(self) -> sv.Detections:
        """The objects as ``supervision.Detections``: amodal masks as ``mask``, visible
        masks, occlusion ratios, depth order and class names in ``data`` (see
        :mod:`edge_sameo.integrations.supervision`)."""
        from edge_sameo.integrations.supervision import frame_to_detections

        return frame_to_detections(self)


@dataclass
class _Detected:
    frame: Frame
    detections: Detections
    timings: dict[str, float]


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class Segmenter:
    """Encoder once per frame, all boxes decoded in one batched call (both decoders)."""

    def __init__(self, predictor: AmodalPredictor, config: StreamConfig) -> None:
        self.predictor = predictor
        self.config = config
        self.temporal = TemporalFilter(config.temporal)

    def __call__(self, item: _Detected) -> FrameResult:
        frame, det = item.frame, item.detections
        h, w = frame.image.shape[:2]
        timings = dict(item.timings)
        # Checked once here (the predictor then checks nothing again): a bad box is
        # counted and dropped, where the predictor would refuse the whole frame.
        boxes, valid = clip_boxes(det.boxes, (h, w))
        invalid = int((~valid).sum())
        det = Detections(boxes, det.scores, det.class_ids, det.track_ids, det.names).select(valid)
        if len(det) > self.config.max_objects:
            top = np.zeros(len(det), bool)
            top[np.argsort(-det.scores)[: self.config.max_objects]] = True
            det = det.select(top)
        self.predictor.set_image(frame.image)
        pred = self.predictor.predict_valid(det.boxes, self.config.amodal_boxes)
        for k in ("preprocess", "encoder", "decoder", "postprocess"):
            timings[k] = pred.speed.get(k, 0.0)
        t0 = time.perf_counter()
        visible = pred.visible_masks if pred.visible_masks is not None else pred.masks
        objects = [
            ObjectResult(
                track_id=int(det.track_ids[i]),
                class_id=int(det.class_ids[i]),
                class_name=det.names.get(int(det.class_ids[i]), str(int(det.class_ids[i]))),
                score=float(det.scores[i]),
                box=pred.boxes[i],
                amodal=pred.masks[i],
                visible=visible[i],
            )
            for i in range(len(det))
        ]
        objects = self.temporal.update(objects)
        assign_order(objects)
        timings["objects"] = (time.perf_counter() - t0) * 1e3
        latency = (time.perf_counter() - frame.captured_at) * 1e3 if frame.captured_at else 0.0
        return FrameResult(frame, objects, timings, latency, invalid)


def _detect(detector: Detector) -> Callable[[Frame], _Detected]:
    def run(frame: Frame) -> _Detected:
        t0 = time.perf_counter()
        det = detector(frame)
        return _Detected(frame, det, {"detect": (time.perf_counter() - t0) * 1e3})

    return run


def _paced(source: FrameSource, max_fps: float | None) -> Generator[Frame, None, None]:
    period = 0.0 if (max_fps is None or source.live) else 1.0 / max_fps
    next_t = time.perf_counter()
    frames = source.frames()
    try:
        for frame in frames:
            if period:
                now = time.perf_counter()
                if now < next_t:
                    time.sleep(next_t - now)
                next_t = max(next_t + period, time.perf_counter())
                frame = Frame(
                    frame.index,
                    frame.timestamp,
                    frame.image,
                    frame.ground_truth,
                    time.perf_counter(),
                )
            yield frame
    finally:
        frames.close()  # the source's reading ends in the thread that read it


def check_source(source: FrameSource, detector: Detector) -> None:
    """Refuse, before any thread starts, a detector that cannot work on ``source``."""
    inner = getattr(detector, "inner", detector)  # a KeyframeDetector wraps one
    if isinstance(inner, GroundTruthDetector) and not source.has_ground_truth:
        raise InputError(
            f"the ground-truth detector needs the synthetic source (--source synth); "
            f"{source.describe()} has no ground truth"
        )


def stream(
    source: FrameSource,
    detector: Detector,
    predictor: AmodalPredictor,
    config: StreamConfig | None = None,
) -> Generator[FrameResult, None, None]:
    """Process ``source`` frame by frame; returns a generator of :class:`FrameResult` in
    frame order. A detector that cannot work on the source raises :class:`InputError`
    here, before any thread starts (the source is closed).

    Closing the generator (``break``, Ctrl-C) stops every stage and the source.
    """
    try:
        check_source(source, detector)
    except InputError:
        source.close()
        raise
    config = config or StreamConfig()
    segment = Segmenter(predictor, config)
    detect = _detect(detector)
    if not config.pipelined:
        return _sequential(source, detect, segment, config)
    return _pipelined(source, detect, segment, config)


class _Fps:
    def __init__(self) -> None:
        self.last: float | None = None
        self.value = 0.0

    def tick(self) -> float:
        now = time.perf_counter()
        if self.last is not None:
            inst = 1.0 / max(now - self.last, 1e-6)
            self.value = inst if self.value == 0 else 0.9 * self.value + 0.1 * inst
        self.last = now
        return self.value


def _sequential(
    source: FrameSource,
    detect: Callable[[Frame], _Detected],
    segment: Segmenter,
    config: StreamConfig,
) -> Generator[FrameResult, None, None]:
    fps = _Fps()
    try:
        for frame in _paced(source, config.max_fps):
            result = segment(detect(frame))
            result.fps = fps.tick()
            yield result
    finally:
        source.close()


def _pipelined(
    source: FrameSource,
    detect: Callable[[Frame], _Detected],
    segment: Segmenter,
    config: StreamConfig,
) -> Generator[FrameResult, None, None]:
    stop = threading.Event()
    latest_only = config.drops_stale_frames(source)
    # Under the latency policy a frame waits behind at most one other, for the one worker
    # that detects and segments it; else detection and segmentation are two stages.
    q_frames: queue.Queue[Any] = queue.Queue(1 if latest_only else config.queue_size)
    q_detected: queue.Queue[Any] = queue.Queue(config.queue_size)
    q_out: queue.Queue[Any] = queue.Queue(config.queue_size)

    def put(q: queue.Queue[Any], item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def put_latest(q: queue.Queue[Any], item: Any) -> bool:
        """Put ``item``; a full queue gives up its oldest frame for it (counted dropped)."""
        while not stop.is_set():
            try:
                q.put_nowait(item)
                return True
            except queue.Full:
                try:
                    q.get_nowait()
                    source.dropped += 1
                except queue.Empty:
                    pass
        return False

    # Under the latency policy a frame that finds the worker's queue full replaces the
    # oldest one there; results always wait their turn.
    send_fresh = put_latest if latest_only else put

    def capture() -> None:
        frames = _paced(source, config.max_fps)
        try:
            for frame in frames:
                if not send_fresh(q_frames, frame):
                    return
        except BaseException as exc:
            put(q_frames, _Failure(exc))
            return
        finally:
            frames.close()  # the source's reader ends in this thread, which read it
        put(q_frames, _END)

    def stage(
        fn: Callable[[Any], Any],
        q_in: queue.Queue[Any],
        q_o: queue.Queue[Any],
        send: Callable[[queue.Queue[Any], Any], bool],
    ) -> None:
        while not stop.is_set():
            try:
                item = q_in.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END or isinstance(item, _Failure):
                put(q_o, item)
                return
            try:
                out = fn(item)
            except BaseException as exc:
                put(q_o, _Failure(exc))
                return
            if not send(q_o, out):
                return

    threads = [threading.Thread(target=capture, name="capture", daemon=True)]
    if latest_only:
        # One worker takes the newest frame through detection and segmentation: on a
        # machine with few cores, detecting the next frame while this one is segmented
        # slows both (each runtime uses every core), and the frame waits longer
        # (docs/BENCHMARKS.md, the queue policy).
        threads.append(
            threading.Thread(
                target=stage,
                args=(lambda frame: segment(detect(frame)), q_frames, q_out, put),
                name="detect-segment",
                daemon=True,
            )
        )
    else:
        threads += [
            threading.Thread(
                target=stage,
                args=(detect, q_frames, q_detected, put),
                name="detect",
                daemon=True,
            ),
            threading.Thread(
                target=stage, args=(segment, q_detected, q_out, put), name="segment", daemon=True
            ),
        ]
    for t in threads:
        t.start()
    fps = _Fps()
    try:
        while True:
            item = q_out.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            item.fps = fps.tick()
            yield item
    finally:
        stop.set()  # 1. signal: every stage and the source
        source.stop()
        for t in threads:  # 2. join: each ends within a frame's work (queues poll `stop`)
            t.join()
        source.close()  # 3. release, now that no thread reads it


class WriteStage:
    """The stream's last stage: hands each result to ``writer`` (render and write: the
    app's :class:`~edge_sameo.stream.app.Writer`), in its own thread when ``threaded``,
    behind a queue of ``queue_size`` results. A write failure is raised at the next
    :meth:`put` (or by :meth:`finish`); the thread drains its queue to the end either way,
    so the producer never blocks on a dead writer."""

    def __init__(
        self, writer: Callable[[FrameResult], None], threaded: bool, queue_size: int = 2
    ) -> None:
        self.writer = writer
        self.failure: BaseException | None = None
        self.queue: queue.Queue[FrameResult | None] = queue.Queue(maxsize=queue_size)
        self.thread: threading.Thread | None = None
        if threaded:
            self.thread = threading.Thread(target=self._drain, name="render-write", daemon=True)
            self.thread.start()

    def _drain(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.failure is None:
                try:
                    self.writer(item)
                except BaseException as exc:
                    self.failure = exc

    def put(self, result: FrameResult) -> None:
        """Hand ``result`` to the writer: queued for the writer thread (blocking while the
        queue is full), or written at once without one; re-raises an earlier write failure."""
        if self.thread is None:
            self.writer(result)
            return
        if self.failure is not None:
            raise self.failure
        self.queue.put(result)

    def finish(self) -> BaseException | None:
        """Write what was handed, end the thread; returns a write failure, if any."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
        return self.failure

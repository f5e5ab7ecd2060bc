"""Frame sources: video files, image folders, cameras, network streams, the synthetic world.

File sources deliver every frame. Live sources (cameras, network streams) keep only the
*newest* frame — a slow model drops frames and never falls behind — count the frames they
drop, and reconnect with backoff when a stream breaks, without ending the run.

Shutdown is ordered: :meth:`FrameSource.stop` (any thread) makes :meth:`~FrameSource.frames`
end soon; :meth:`~FrameSource.close` releases the file or device once the thread reading
``frames()`` is done (OpenCV readers must never be released under a running ``read``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError
from edge_sameo.io import warn_if_truncated_jpeg

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "tcp://", "udp://", "rtmp://")


@dataclass(frozen=True)
class Frame:
    """One frame: ``image`` (H, W, 3) uint8 RGB; ``timestamp`` in seconds (source time for
    files, wall-clock for live sources); ``ground_truth`` only from the synthetic world."""

    index: int
    timestamp: float
    image: NDArray[np.uint8]
    ground_truth: Any = None
    captured_at: float = 0.0


class FrameSource(ABC):
    """Where frames come from. :meth:`frames` yields :class:`Frame` objects ((H, W, 3) uint8
    RGB) in order; the counters say what happened on the way: ``dropped`` (live frames
    replaced by a newer one before they were read), ``reconnects``, ``skipped`` (unreadable
    images), ``truncated`` (a video that ended early) and ``gave_up``. ``live`` sources keep
    only the newest frame; ``fps`` is the source's rate when known."""

    live: bool = False
    #: Frames carry the synthetic world's ground truth (``Frame.ground_truth``).
    has_ground_truth: bool = False

    def __init__(self) -> None:
        self.dropped = 0
        self.reconnects = 0
        self.skipped = 0
        self.truncated = False
        #: A live source lost for longer than its reconnect policy allows.
        self.gave_up = False
        self.fps: float | None = None
        #: Frames a file source will deliver (None: unknown, or live).
        self.expected_frames: int | None = None
        self._stop = threading.Event()

    @abstractmethod
    def frames(self) -> Generator[Frame, None, None]:
        """Yield frames until the source ends (or :meth:`stop` is called)."""

    def stop(self) -> None:
        """Make :meth:`frames` end soon; safe from any thread, releases nothing."""
        self._stop.set()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device/file; call it once the thread iterating :meth:`frames` ended
        (idempotent)."""

    def describe(self) -> str:
        """A short human-readable name of the source, for the run's log line."""
        return type(self).__name__


def _bgr_to_rgb(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2))
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


class VideoFileSource(FrameSource):
    """Every frame of a video file; a truncated file ends early and sets ``truncated``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"video not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InputError(f"cannot open video {self.path}: not a video file or corrupt")
        ok, first = cap.read()
        if not ok:
            cap.release()
            raise InputError(f"cannot read any frame from {self.path}: empty or corrupt video")
        self._cap, self._first = cap, first
        self._lock = threading.Lock()  # a read and a release never overlap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.expected_frames = count if count > 0 else None

    def describe(self) -> str:
        """``video PATH``."""
        return f"video {self.path}"

    def frames(self) -> Generator[Frame, None, None]:
        """Every frame in order, timestamped ``index / fps``; releases the file at the end."""
        index, img = 0, self._first
        fps = self.fps or 30.0
        try:
            while img is not None and not self._stop.is_set():
                yield Frame(index, index / fps, _bgr_to_rgb(img), captured_at=time.perf_counter())
                index += 1
                img = self._read()
        finally:
            self.close()
        stopped = self._stop.is_set()
        if not stopped and self.expected_frames is not None and index < self.expected_frames - 1:
            self.truncated = True
            log.warning("%s ended after %d of %d frames", self.path, index, self.expected_frames)

    def _read(self) -> NDArray[np.uint8] | None:
        with self._lock:
            ok, img = self._cap.read()
        return img if ok else None

    def close(self) -> None:
        """Release the OpenCV reader (never during a read: both hold the same lock)."""
        with self._lock:
            self._cap.release()


class ImageFolderSource(FrameSource):
    """Images of a folder in name order; unreadable files are skipped and counted."""

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise InputError(f"no images in folder {self.path}")
        self.fps = fps
        self.expected_frames = len(self.files)
        self._first = self._first_readable()

    def describe(self) -> str:
        """``folder PATH (N images)``."""
        return f"folder {self.path} ({len(self.files)} images)"

    def _first_readable(self) -> tuple[int, NDArray[np.uint8]]:
        """The first image that decodes: a folder with none is refused before the run."""
        for i, p in enumerate(self.files):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None:
                for bad in self.files[:i]:
                    self._skip(bad)
                warn_if_truncated_jpeg(p)
                return i, img
        raise InputError(
            f"no readable frame in {self.path}: none of its {len(self.files)} images decodes"
        )

    def _skip(self, path: Path) -> None:
        self.skipped += 1
        log.warning("skipping unreadable image %s", path)

    def _read(self, path: Path) -> NDArray[np.uint8] | None:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            self._skip(path)
        else:
            warn_if_truncated_jpeg(path)
        return img

    def frames(self) -> Generator[Frame, None, None]:
        """The readable images in name order, timestamped ``index / fps``; an unreadable one
        is skipped, counted in ``skipped`` and does not take an index."""
        start, first = self._first
        rest = (self._read(p) for p in self.files[start + 1 :])
        index = 0
        for img in itertools.chain([first], rest):
            if self._stop.is_set():
                return
            if img is None:
                continue
            yield Frame(
                index, index / (self.fps or 30.0), _bgr_to_rgb(img), captured_at=time.perf_counter()
            )
            index += 1


class SyntheticVideoSource(FrameSource):
    """The synthetic occlusion video of ``edge_sameo.data`` with per-frame ground truth."""

    has_ground_truth = True

    def __init__(
        self,
        frames: int = 150,
        seed: int = 0,
        size: tuple[int, int] = (640, 480),
        fps: float = 30.0,
    ) -> None:
        super().__init__()
        from edge_sameo.data import SynthConfig, VideoConfig
        from edge_sameo.data.synth import compose_video, item_seed

        if frames < 1:
            raise InputError(f"synthetic video needs >= 1 frames, got {frames}")
        self.num_frames, self.seed, self.fps = frames, seed, fps
        self.expected_frames = frames
        self.config = SynthConfig(size=size)
        self._bg, self._tracks = compose_video(
            item_seed(seed, 0), self.config, VideoConfig(), frames
        )

    def describe(self) -> str:
        """``synthetic video (seed S, N frames, WxH)``."""
        w, h = self.config.size
        return f"synthetic video (seed {self.seed}, {self.num_frames} frames, {w}x{h})"

    def frames(self) -> Generator[Frame, None, None]:
        """The video's frames, each with its scene (masks, boxes, occlusion) as
        ``Frame.ground_truth``; the same seed gives the same frames."""
        from edge_sameo.data.synth import video_frame

        last = max(self.num_frames - 1, 1)
        for i in range(self.num_frames):
            if self._stop.is_set():
                return
            scene = video_frame(self._bg, self._tracks, i / last)
            yield Frame(i, i / (self.fps or 30.0), scene.image, scene, time.perf_counter())


@dataclass(frozen=True)
class ReconnectPolicy:
    """Backoff for live sources: after each failed open or read wait ``initial_s``, doubling
    up to ``max_s``, back to ``initial_s`` once a frame arrives; give up (end the run
    cleanly) after ``give_up_s`` without a frame; a source that never opens within
    ``connect_timeout_s`` is an input error."""

    initial_s: float = 0.1
    max_s: float = 2.0
    give_up_s: float = 60.0
    connect_timeout_s: float = 5.0
    read_timeout_ms: int = 3000

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise InputError("reconnect: need 0 < initial <= max")
        if not self.give_up_s > 0:
            raise InputError(f"--reconnect-timeout must be > 0 s, got {self.give_up_s:g}")


class LiveSource(FrameSource):
    """A camera index or a network URL read by a thread that keeps only the newest frame."""

    live = True

    def __init__(self, spec: int | str, policy: ReconnectPolicy | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.policy = policy or ReconnectPolicy()
        self._cond = threading.Condition()
        self._latest: tuple[NDArray[np.uint8], float] | None = None
        self._ended = False
        self._connected_once = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._reader, name="live-capture", daemon=True)
        self._thread.start()
        if not self._connected_once.wait(self.policy.connect_timeout_s):
            self.close()
            raise InputError(
                self._error
                or f"cannot open stream {spec!r}: no frame within "
                f"{self.policy.connect_timeout_s:g} s"
            )

    def describe(self) -> str:
        """``camera N`` or ``stream URL``."""
        kind = "camera" if isinstance(self.spec, int) else "stream"
        return f"{kind} {self.spec}"

    def _open(self) -> Any:
        t = self.policy.read_timeout_ms
        if isinstance(self.spec, int):
            return cv2.VideoCapture(self.spec)
        return cv2.VideoCapture(
            self.spec,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, t, cv2.CAP_PROP_READ_TIMEOUT_MSEC, t],
        )

    def _reader(self) -> None:
        """The only thread that touches the capture: opens, reads and releases it. A failed
        open or read (a stream that accepts and closes at once, a camera that opens but
        gives nothing) waits the policy's backoff before the next try; the wait never runs
        past the give-up time."""
        backoff = self.policy.initial_s
        last_frame = time.monotonic()
        lost = False  # a frame came, then the stream broke: the next frame is a reconnect
        cap: Any = None
        while not self._stop.is_set():
            if cap is None:
                cap = self._open()
                if not cap.isOpened():
                    cap.release()
                    cap = None
                    self._error = f"cannot open stream {self.spec!r}"
            if cap is not None:
                ok, img = cap.read()
                if ok:
                    if lost:
                        lost = False
                        self.reconnects += 1
                        log.warning("reconnected to %s", self.spec)
                    backoff = self.policy.initial_s
                    last_frame = time.monotonic()
                    self._connected_once.set()
                    with self._cond:
                        if self._latest is not None:
                            self.dropped += 1  # the consumer never saw the previous frame
                        self._latest = (img, time.perf_counter())
                        self._cond.notify_all()
                    continue
                cap.release()
                cap = None
                if self._connected_once.is_set() and not lost:
                    log.warning("stream %s broke; reconnecting", self.spec)
            lost = self._connected_once.is_set()
            left = self.policy.give_up_s - (time.monotonic() - last_frame)
            if left <= 0:
                self.gave_up = True
                break
            self._stop.wait(min(backoff, left))
            backoff = min(backoff * 2, self.policy.max_s)
        if cap is not None:
            cap.release()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def frames(self) -> Generator[Frame, None, None]:
        """The newest frame each time the consumer asks (older ones are counted in
        ``dropped``), timestamped in seconds since the first request; ends when the reader
        gives up or :meth:`stop` is called, then closes the source."""
        index, start = 0, time.monotonic()
        try:
            while True:
                with self._cond:
                    while self._latest is None and not self._ended and not self._stop.is_set():
                        self._cond.wait(0.5)
                    if self._latest is None:
                        return
                    img, captured = self._latest
                    self._latest = None
                yield Frame(index, time.monotonic() - start, _bgr_to_rgb(img), captured_at=captured)
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        """Stop and join the reader thread (which releases the capture); a frame read but
        never delivered counts as dropped. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        with self._cond:
            if self._latest is not None:  # read but never delivered: dropped
                self.dropped += 1
                self._latest = None


def open_source(
    spec: str | int | Path,
    *,
    synth_frames: int = 150,
    synth_size: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    policy: ReconnectPolicy | None = None,
) -> FrameSource:
    """``synth`` / ``synth:SEED`` (the synthetic video), a camera index (``0``), a URL
    (rtsp/http/tcp/udp), an image folder, or a video file."""
    if isinstance(spec, int):
        return LiveSource(spec, policy)
    text = str(spec)
    if text == "synth" or text.startswith("synth:"):
        seed = int(text.split(":", 1)[1]) if ":" in text else 0
        return SyntheticVideoSource(synth_frames, seed, synth_size, fps)
    if text.isdigit():
        return LiveSource(int(text), policy)
    if text.lower().startswith(URL_SCHEMES):
        return LiveSource(text, policy)
    path = Path(text)
    if path.is_dir():
        return ImageFolderSource(path, fps)
    if not path.exists():
        raise InputError(
            f"source not found: {text} (a video file, image folder, camera index, URL or 'synth')"
        )
    return VideoFileSource(path)

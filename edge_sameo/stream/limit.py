"""``run --frames N`` on any source: the first N frames of a file, folder, camera or stream."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from edge_sameo.stream.sources import Frame, FrameSource


class FrameLimit(FrameSource):
    """At most ``limit`` frames of ``inner``; counters (dropped, reconnects…), ``fps`` and
    everything else are ``inner``'s. Stopping at the limit is not a truncated source."""

    def __init__(self, inner: FrameSource, limit: int) -> None:
        # FrameSource.__init__ is not called: its counters are read from ``inner``.
        self.inner, self.limit = inner, limit
        self.live = inner.live
        self.has_ground_truth = inner.has_ground_truth
        known = inner.expected_frames
        self.expected_frames = limit if known is None else min(known, limit)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def frames(self) -> Generator[Frame, None, None]:
        """The first ``limit`` frames of ``inner``; the inner generator is closed after."""
        frames = self.inner.frames()
        try:
            # range first: zip stops at the limit without reading one frame more.
            for _, frame in zip(range(self.limit), frames, strict=False):
                yield frame
        finally:
            frames.close()  # the inner source ends as it does after its last frame

    def stop(self) -> None:
        """Ask ``inner`` to stop."""
        self.inner.stop()

    def close(self) -> None:
        """Close ``inner``."""
        self.inner.close()

    def describe(self) -> str:
        """``inner``'s description, with ``, first <limit> frames``."""
        return f"{self.inner.describe()}, first {self.limit} frames"

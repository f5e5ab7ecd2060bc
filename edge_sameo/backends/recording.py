"""A pass-through runtime that keeps what the predictor decoded and handed the refiner.

Calibration (``calib``) and ``edge-sameo bench`` need the refiner's inputs exactly as the
app builds them (``AmodalPredictor``: decoder logits -> windows -> ``crop_inputs``);
wrapping the runtime, rather than building the crops a second way, keeps one
implementation of that path.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend, DecoderOutput
from edge_sameo.precision import PRECISIONS


class RecordingBackend(Backend):
    """Runs every call on ``inner`` (which chunks by its own ``max_boxes``). :attr:`decoded`
    is the last :meth:`decode` result, :attr:`crops` the last (N, C, R, R) float32 input
    of :meth:`refine`; ``None`` before the first call."""

    name = "recording"
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.contract, inner.precision)
        self.inner = inner
        self.decoded: DecoderOutput | None = None
        self.crops: NDArray[np.float32] | None = None

    def describe(self) -> str:
        """The wrapped backend's description."""
        return self.inner.describe()

    def encode(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """pixels (1, 3, S, S) float32 RGB in [0, 1] -> image embeddings (1, C, G, G) float32
        (the wrapped backend's)."""
        return self.inner.encode(pixels)

    def _decode(self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]) -> DecoderOutput:
        self.decoded = self.inner.decode(embedding, boxes)
        return self.decoded

    def _refine(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        self.crops = crops
        return self.inner.refine(crops)

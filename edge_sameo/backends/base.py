"""The one small interface every runtime implements; the predictor and the stream loop
depend only on it. Runtimes import their packages lazily (``tensorrt``, ``openvino``…)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from edge_sameo.contract import ExportContract
from edge_sameo.errors import InputError
from edge_sameo.precision import listed


@dataclass(frozen=True)
class DecoderOutput:
    """Decoder results for N boxes (L = low-res side, 256 at 1024 px).

    low_res_logits: (N, 3, L, L) float32, iou_predictions: (N, 3) float32 — the main
    (amodal with SAMEO weights) decoder; ``modal_*`` the same for the modal decoder,
    ``None`` when the model has none.
    """

    low_res_logits: NDArray[np.float32]
    iou_predictions: NDArray[np.float32]
    modal_low_res_logits: NDArray[np.float32] | None = None
    modal_iou_predictions: NDArray[np.float32] | None = None

    @staticmethod
    def concat(parts: list[DecoderOutput]) -> DecoderOutput:
        """The outputs of ``parts`` (chunks of one box list) joined along the box axis."""

        def cat(name: str) -> NDArray[np.float32] | None:
            arrays = [getattr(p, name) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays, axis=0)

        lo, iou = cat("low_res_logits"), cat("iou_predictions")
        assert lo is not None and iou is not None
        return DecoderOutput(lo, iou, cat("modal_low_res_logits"), cat("modal_iou_predictions"))


class Backend(ABC):
    """Encoder + decoder on one runtime.

    ``encode``: pixels (1, 3, S, S) float32 in [0, 1] (``preprocess.resize_pixels``)
    -> image embeddings (1, C, S/p, S/p) float32. ``decode``: embeddings + boxes
    (N, 4) float32 XYXY in the S×S model frame, N >= 1 -> :class:`DecoderOutput`.
    """

    name: ClassVar[str]
    #: Precisions this runtime can run, first = default
    #: (:data:`edge_sameo.precision.RUNTIME_PRECISIONS`).
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, contract: ExportContract, precision: str) -> None:
        self.check_precision(precision)
        self.contract = contract
        self.precision = precision

    @classmethod
    def default_precision(cls) -> str:
        """The precision this runtime runs when none is named: its first, unless the runtime
        chooses per machine (OpenVINO)."""
        return cls.precisions[0]

    @classmethod
    def default_options(cls, precision: str) -> dict[str, Any]:
        """Constructor options that this runtime's default ``precision`` (:meth:`default_precision`,
        or ``auto``'s) comes with; ``create_backend`` adds them when no precision is named."""
        return {}

    @classmethod
    def check_precision(cls, precision: str) -> None:
        """:class:`InputError` unless this runtime runs ``precision``."""
        if precision not in cls.precisions:
            raise InputError(
                f"backend {cls.name!r} supports precision {listed(cls.precisions)}, "
                f"not {precision!r}"
            )

    @property
    def img_size(self) -> int:
        """S, the side of the square model input in pixels (1024 for EfficientSAM)."""
        return self.contract.model.img_size

    @property
    def has_modal(self) -> bool:
        """Whether the decoder also returns the modal (visible-mask) head."""
        return self.contract.has_modal

    @property
    def has_refiner(self) -> bool:
        """Whether the model has the object-resolution refiner (:meth:`refine`)."""
        return self.contract.has_refiner

    #: Largest N one decoder call takes (an engine profile's max); None = unbounded.
    max_boxes: int | None = None

    @abstractmethod
    def encode(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """pixels (1, 3, S, S) float32 RGB in [0, 1], resized to S×S -> image embeddings
        (1, C, G, G) float32 (G = S / patch size)."""

    @abstractmethod
    def _decode(
        self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]
    ) -> DecoderOutput: ...

    def decode(self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]) -> DecoderOutput:
        """Decode all boxes; split into chunks of ``max_boxes`` where the runtime has a limit."""
        if len(boxes) == 0:
            raise ValueError("decode needs N >= 1 boxes (the predictor handles N = 0)")
        limit = self.max_boxes
        if limit is None or len(boxes) <= limit:
            return self._decode(embedding, boxes)
        return DecoderOutput.concat(
            [self._decode(embedding, boxes[i : i + limit]) for i in range(0, len(boxes), limit)]
        )

    def _refine(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        raise InputError(f"backend {self.name!r} cannot run the refiner")

    def refine(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        """(N, C, R, R) float32 crops (``edge_sameo.refine.crop_inputs``), N >= 1 ->
        (N, 2, R, R) float32 amodal and visible logits; chunked by ``max_boxes``."""
        if not self.has_refiner:
            raise InputError("this model has no refiner")
        limit = self.max_boxes
        if limit is None or len(crops) <= limit:
            return self._refine(crops)
        return np.concatenate(
            [self._refine(crops[i : i + limit]) for i in range(0, len(crops), limit)]
        )

    def describe(self) -> str:
        """``"<runtime> <precision>"`` for logs and summaries, e.g. ``"onnxruntime fp32"``."""
        return f"{self.name} {self.precision}"

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes need nothing
        """Release runtime resources (engines, sessions); the object is unusable after."""

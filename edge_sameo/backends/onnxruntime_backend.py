"""ONNX Runtime: CPU (and CUDA when onnxruntime-gpu is installed) from exported graphs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend, DecoderOutput
from edge_sameo.backends.onnx_common import check_graph_io, open_graph, ort_session, read_contract
from edge_sameo.contract import BOXES, CROPS, IMAGE_EMBEDDINGS, PIXELS, GraphContract
from edge_sameo.errors import InputError
from edge_sameo.precision import RUNTIME_PRECISIONS

#: Execution providers in order of preference (the first available ones are used).
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend(Backend):
    """``providers``: ONNX Runtime execution providers in order of preference; those not
    installed are skipped (default: CUDA where available, then CPU)."""

    name = "onnxruntime"
    precisions: ClassVar[tuple[str, ...]] = RUNTIME_PRECISIONS["onnxruntime"]

    def __init__(
        self,
        export_dir: str | Path,
        precision: str = "fp32",
        threads: int | None = None,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
    ) -> None:
        import onnxruntime as ort

        directory, contract = read_contract(export_dir)
        super().__init__(contract, precision)
        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available]
        if not chosen:
            raise InputError(
                f"none of the ONNX Runtime providers {', '.join(providers)} is available "
                f"(have {', '.join(available)})"
            )

        def session(graph: GraphContract) -> Any:
            def create(path: Path) -> Any:
                sess = ort_session(path, threads, chosen)
                inputs = [([t.name], t.shape) for t in sess.get_inputs()]
                outputs = [([t.name], t.shape) for t in sess.get_outputs()]
                check_graph_io(path, graph, inputs, outputs)
                return sess

            return open_graph(directory, contract, graph.file, precision, create)

        self._encoder = session(contract.encoder)
        self._decoder = session(contract.decoder)
        self._refiner = None if contract.refiner is None else session(contract.refiner)
        self.providers = self._encoder.get_providers()

    def describe(self) -> str:
        """``"onnxruntime <precision> (<first provider in use>)"``."""
        return f"onnxruntime {self.precision} ({self.providers[0]})"

    def encode(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """pixels (1, 3, S, S) float32 RGB in [0, 1] -> image embeddings (1, C, G, G) float32
        (one encoder session run)."""
        (emb,) = self._encoder.run(None, {PIXELS: pixels})
        return np.asarray(emb, np.float32)

    def _decode(self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]) -> DecoderOutput:
        outs = self._decoder.run(None, {IMAGE_EMBEDDINGS: embedding, BOXES: boxes})
        return DecoderOutput(*(np.asarray(o, np.float32) for o in outs))

    def _refine(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self._refiner is not None  # refine() checks the contract first
        (logits,) = self._refiner.run(None, {CROPS: np.ascontiguousarray(crops, np.float32)})
        return np.asarray(logits, np.float32)

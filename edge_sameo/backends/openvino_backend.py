"""OpenVINO CPU runtime from the exported ONNX graphs (f32, bf16 inference hint, int8 Q/DQ)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend, DecoderOutput
from edge_sameo.backends.onnx_common import precision_file, read_contract
from edge_sameo.contract import BOXES, IMAGE_EMBEDDINGS, PIXELS
from edge_sameo.errors import require

#: Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively (AVX512-BF16 or AMX)."""
    ov = require("openvino", "openvino")
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # type: ignore[attr-defined]
    return "BF16" in caps


class OpenVINOBackend(Backend):
    name = "openvino"
    precisions: ClassVar[tuple[str, ...]] = ("bf16", "fp32", "fp16", "int8")

    def __init__(
        self, export_dir: str | Path, precision: str = "bf16", threads: int | None = None
    ) -> None:
        ov = require("openvino", "openvino")
        directory, contract = read_contract(export_dir)
        super().__init__(contract, precision)
        core = ov.Core()  # type: ignore[attr-defined]
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        # int8 runs the Q/DQ graph: OpenVINO executes its quantised ops in int8 kernels.
        graph_precision = "int8" if precision == "int8" else "fp32"
        enc_path = precision_file(directory, contract.encoder.file, graph_precision)
        dec_path = precision_file(directory, contract.decoder.file, graph_precision)
        self._encoder = core.compile_model(str(enc_path), "CPU", config).create_infer_request()
        self._decoder = core.compile_model(str(dec_path), "CPU", config).create_infer_request()
        self._decoder_outputs = contract.decoder.output_names

    def encode(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        self._encoder.infer({PIXELS: pixels})
        return np.array(self._encoder.get_output_tensor(0).data, np.float32)

    def _decode(self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]) -> DecoderOutput:
        self._decoder.infer({IMAGE_EMBEDDINGS: embedding, BOXES: boxes})
        outs = [
            np.array(self._decoder.get_tensor(name).data, np.float32)
            for name in self._decoder_outputs
        ]
        return DecoderOutput(*outs)

"""OpenVINO CPU runtime from the exported ONNX graphs (f32, bf16 inference hint, int8 Q/DQ)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend, DecoderOutput
from edge_sameo.backends.onnx_common import check_graph_io, open_graph, read_contract
from edge_sameo.contract import BOXES, CROPS, IMAGE_EMBEDDINGS, PIXELS, GraphContract
from edge_sameo.errors import InputError, require
from edge_sameo.precision import RUNTIME_PRECISIONS

#: Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def _dims(port: Any) -> list[int | str]:
    """An OpenVINO port's shape: the length of each static dimension, "?" where dynamic."""
    return [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively (AVX512-BF16 or AMX)."""
    ov = require("openvino", "openvino")
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # type: ignore[attr-defined]
    return "BF16" in caps


def bf16_pays(native: bool, vendor: str, flags: set[str]) -> bool:
    """Whether bf16 graphs run faster than fp32 on a CPU: OpenVINO runs bf16 natively
    (``native``) and the CPU has AMX (Intel's bf16 matrix unit) or is an AMD one (Zen 4
    runs AVX512-BF16 dot products at twice its fp32 rate). Measured on 2-core VMs
    (docs/BENCHMARKS.md): ViT-Ti's encoder in bf16 vs fp32, 638 vs 1146 ms on an AMD EPYC
    (Zen 4), 392–652 vs 1898 ms on an Intel Xeon with AMX, but 1488 vs 1033 ms on an Intel
    Xeon with AVX512-BF16 and no AMX."""
    return native and ("amx_bf16" in flags or vendor == "AuthenticAMD")


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` fields of a Linux ``/proc/cpuinfo`` text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block ends
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


@functools.cache
def this_cpu() -> dict[str, str]:
    """:func:`cpuinfo_fields` of this machine's Linux ``/proc/cpuinfo``, read once; empty
    where there is no such file."""
    try:
        return cpuinfo_fields(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {}


@functools.cache
def cpu_prefers_bf16() -> bool:
    """:func:`bf16_pays` on this CPU, its vendor and flags read from Linux's
    ``/proc/cpuinfo``. Elsewhere (no such file, or no x86 ``flags`` in it) whether OpenVINO
    runs bf16 natively: the rule is measured on x86 Linux only."""
    native = cpu_supports_bf16()
    fields = this_cpu()
    flags = set(fields.get("flags", "").split())
    return bf16_pays(native, fields.get("vendor_id", ""), flags) if flags else native


def cpu_has_avx512() -> bool | None:
    """Whether this CPU has AVX-512 (``avx512f`` among the x86 flags of Linux's
    ``/proc/cpuinfo``); None where they cannot be read (another OS or architecture)."""
    flags = set(this_cpu().get("flags", "").split())
    return "avx512f" in flags if "sse2" in flags else None


class OpenVINOBackend(Backend):
    """OpenVINO on the CPU: the exported graphs compiled with a latency hint and the
    precision as inference-precision hint (int8 runs the Q/DQ graph)."""

    name = "openvino"
    precisions: ClassVar[tuple[str, ...]] = RUNTIME_PRECISIONS["openvino"]

    @classmethod
    def default_precision(cls) -> str:
        """bf16 where it is faster than fp32 (:func:`cpu_prefers_bf16`), else fp32."""
        return "bf16" if cpu_prefers_bf16() else "fp32"

    @classmethod
    def default_options(cls, precision: str) -> dict[str, Any]:
        """At the default bf16 the decoder runs in fp32 and the refiner in bf16. Measured
        (docs/BENCHMARKS.md, "bf16 encoder, fp32 masks"): the bundled nano's frame is as fast
        or faster with an fp32 decoder and its masks agree with fp32 (``make demo`` AP50
        0.816 as in fp32, 0.790 all in bf16); the ViT-Ti frame costs about 6 % more for mask
        IoU 0.986 instead of 0.947 against fp32. The refiner in bf16 takes about 0.6x its
        fp32 time on an AMD EPYC for the same held-out figures (within 0.0002; docs/BENCHMARKS.md,
        "the mirror average and a bf16 refiner"). ``--precision bf16`` still runs every graph
        in bf16."""
        if precision != "bf16":
            return {}
        return {"decoder_precision": "fp32", "refiner_precision": "bf16"}

    def __init__(
        self,
        export_dir: str | Path,
        precision: str = "bf16",
        threads: int | None = None,
        decoder_precision: str | None = None,
        refiner_precision: str | None = None,
    ) -> None:
        """``decoder_precision`` overrides ``precision`` for the stages that make the masks,
        the decoder and the refiner, and ``refiner_precision`` the decoder's for the refiner
        (e.g. a bf16 encoder with an fp32 decoder: the CPU plugin has no per-layer precision
        control, so each graph gets its own)."""
        ov = require("openvino", "openvino")
        directory, contract = read_contract(export_dir)
        super().__init__(contract, precision)
        self.decoder_precision = decoder_precision or precision
        self.refiner_precision = refiner_precision or self.decoder_precision
        for stage, p in (("decoder", self.decoder_precision), ("refiner", self.refiner_precision)):
            if p not in self.precisions:
                raise InputError(f"openvino {stage} precision {p!r} unknown")
        core = ov.Core()  # type: ignore[attr-defined]

        def compile_graph(graph: GraphContract, p: str) -> Any:
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": HINTS[p]}
            if threads:
                config["INFERENCE_NUM_THREADS"] = str(threads)

            def create(path: Path) -> Any:
                compiled = core.compile_model(str(path), "CPU", config)
                inputs = [(t.get_names(), _dims(t)) for t in compiled.inputs]
                outputs = [(t.get_names(), _dims(t)) for t in compiled.outputs]
                check_graph_io(path, graph, inputs, outputs)
                return compiled.create_infer_request()

            # int8 runs the Q/DQ graph: OpenVINO executes its quantised ops in int8 kernels.
            graph_precision = "int8" if p == "int8" else "fp32"
            return open_graph(directory, contract, graph.file, graph_precision, create)

        self._encoder = compile_graph(contract.encoder, precision)
        self._decoder = compile_graph(contract.decoder, self.decoder_precision)
        self._decoder_outputs = contract.decoder.output_names
        self._refiner = (
            None
            if contract.refiner is None
            else compile_graph(contract.refiner, self.refiner_precision)
        )

    def describe(self) -> str:
        """``"openvino <precision>"``, naming the decoder's and the refiner's precisions
        too where they differ."""
        refiner = self.refiner_precision if self.has_refiner else self.decoder_precision
        if self.decoder_precision == refiner == self.precision:
            return f"openvino {self.precision}"
        if not self.has_refiner:
            return f"openvino {self.precision} encoder, {self.decoder_precision} decoder"
        if refiner == self.decoder_precision:
            masks = f"{self.decoder_precision} decoder + refiner"
        else:
            masks = f"{self.decoder_precision} decoder, {refiner} refiner"
        return f"openvino {self.precision} encoder, {masks}"

    def encode(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """pixels (1, 3, S, S) float32 RGB in [0, 1] -> image embeddings (1, C, G, G) float32
        (a copy of the infer request's output)."""
        self._encoder.infer({PIXELS: pixels})
        return np.array(self._encoder.get_output_tensor(0).data, np.float32)

    def _decode(self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]) -> DecoderOutput:
        self._decoder.infer({IMAGE_EMBEDDINGS: embedding, BOXES: boxes})
        outs = [
            np.array(self._decoder.get_tensor(name).data, np.float32)
            for name in self._decoder_outputs
        ]
        return DecoderOutput(*outs)

    def _refine(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self._refiner is not None  # refine() checks the contract first
        self._refiner.infer({CROPS: np.ascontiguousarray(crops, np.float32)})
        return np.array(self._refiner.get_output_tensor(0).data, np.float32)

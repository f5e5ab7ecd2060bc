"""The numeric precisions: which exist, which have their own ONNX file, which TensorRT builds
and which each runtime runs. Runtimes, builders and every ``--precision`` flag take their
choices from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from edge_sameo.errors import InputError

#: Every precision, in the order they are listed everywhere.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: Precisions with their own ONNX file beside the fp32 export (bf16 is a runtime setting of
#: the fp32 graph, not a file).
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
#: The variants ``edge-sameo calibrate`` writes beside an export (``<graph>.fp16.onnx``, the
#: Q/DQ ``<graph>.int8.onnx``).
CALIBRATED_PRECISIONS = ("fp16", "int8")
#: The precisions of TensorRT engines (``edge-sameo build``).
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
#: The precisions each runtime runs; the first is its default.
RUNTIME_PRECISIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "torch": ("fp32", "fp16", "bf16"),
        "onnxruntime": ("fp32", "fp16", "int8"),
        # bf16 is OpenVINOBackend's own default; create_backend without a precision
        # chooses per CPU (OpenVINOBackend.default_precision: bf16 only where measured faster)
        "openvino": ("bf16", "fp32", "fp16", "int8"),
        "tensorrt": ("fp16", "fp32", "int8"),
    }
)


def listed(precisions: Iterable[str]) -> str:
    """``"fp32, fp16, int8"``: ``precisions`` in the order of :data:`PRECISIONS`."""
    chosen = set(precisions)
    return ", ".join(p for p in PRECISIONS if p in chosen)


def check_precision(precision: str, allowed: Iterable[str], what: str = "precision") -> str:
    """``precision`` when it is one of ``allowed``, else :class:`InputError` ("``what`` must
    be one of ..."); ``what`` names the field or flag."""
    allowed = tuple(allowed)
    if precision not in allowed:
        raise InputError(f"{what} must be one of {listed(allowed)}, not {precision!r}")
    return precision

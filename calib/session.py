"""ONNX Runtime on the CPU for calibration and accuracy checks: whole exports as a runtime
the predictor can drive (single graphs: ``edge_sameo.backends.onnx_common.ort_session``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_sameo.backends.onnxruntime_backend import OnnxRuntimeBackend


def cpu_backend(
    directory: str | Path, precision: str = "fp32", threads: int = 0
) -> OnnxRuntimeBackend:
    """Every graph of the export in ``directory`` at ``precision`` (``<graph>.onnx`` or
    ``<graph>.<precision>.onnx``) on the CPU provider (``threads`` 0 = ORT default)."""
    from edge_sameo.backends.onnx_common import CPU_PROVIDERS
    from edge_sameo.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(
        directory, precision, threads=threads or None, providers=CPU_PROVIDERS
    )

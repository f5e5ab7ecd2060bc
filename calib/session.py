"""ONNX Runtime on the CPU for calibration and accuracy checks (one place for the options):
sessions of single graphs, and whole exports as a runtime the predictor can drive."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_sameo.backends.onnxruntime_backend import OnnxRuntimeBackend


def cpu_session(path: str | Path, threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider (``threads`` 0 = ORT default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def cpu_backend(
    directory: str | Path, precision: str = "fp32", threads: int = 0
) -> OnnxRuntimeBackend:
    """Every graph of the export in ``directory`` at ``precision`` (``<graph>.onnx`` or
    ``<graph>.<precision>.onnx``) on the CPU provider (``threads`` 0 = ORT default)."""
    from edge_sameo.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(
        directory, precision, threads=threads or None, providers=("CPUExecutionProvider",)
    )

"""ONNX Runtime CPU sessions for calibration and accuracy checks (one place for the options)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(path: str | Path, threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider (``threads`` 0 = ORT default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

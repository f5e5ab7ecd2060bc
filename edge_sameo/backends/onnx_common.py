"""What the ONNX-based runtimes share: locating the graph files of a precision."""

from __future__ import annotations

from pathlib import Path

from edge_sameo.contract import ExportContract, precision_onnx_path
from edge_sameo.errors import InputError


def precision_file(directory: Path, graph_file: str, precision: str) -> Path:
    """``encoder.onnx`` for fp32, ``encoder.<precision>.onnx`` (written by ``calib``)
    otherwise; a clear error when the graph of that precision was not produced."""
    path = precision_onnx_path(directory, graph_file, "fp32" if precision == "bf16" else precision)
    if not path.is_file():
        hint = (
            f"; run: edge-sameo calibrate --onnx {directory} --precision {precision}"
            if precision in ("fp16", "int8")
            else "; run: edge-sameo export"
        )
        raise InputError(f"missing {path}{hint}")
    return path


def read_contract(directory: str | Path) -> tuple[Path, ExportContract]:
    d = Path(directory)
    return d, ExportContract.read(d)

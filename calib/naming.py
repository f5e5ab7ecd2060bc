"""File names of precision variants: the one place that spells them.

``<graph>.onnx`` is the fp32 export; ``<graph>.fp16.onnx`` and ``<graph>.int8.onnx`` (Q/DQ)
sit beside it, and ``calib_meta.json`` records how each variant was made. The TensorRT
builder and every runtime look the files up through these helpers.
"""

from __future__ import annotations

from pathlib import Path

from edge_sameo.errors import InputError

#: Precisions that have their own ONNX file (fp32 is the export itself; bf16 is a runtime
#: setting of the fp32 graph, not a file).
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
#: Sidecar beside the graphs: what was kept float and which data calibrated each variant.
CALIB_META_FILE = "calib_meta.json"


def precision_onnx_name(graph_file: str, precision: str) -> str:
    """``("encoder.onnx", "int8") -> "encoder.int8.onnx"``; fp32 returns ``graph_file``."""
    if precision not in ONNX_PRECISIONS:
        raise InputError(
            f"precision must be one of {', '.join(ONNX_PRECISIONS)}, not {precision!r}"
        )
    if not graph_file.endswith(".onnx"):
        raise InputError(f"{graph_file!r} is not an .onnx file name")
    if precision == "fp32":
        return graph_file
    return f"{graph_file[: -len('.onnx')]}.{precision}.onnx"


def precision_onnx_path(directory: str | Path, graph_file: str, precision: str) -> Path:
    """``directory / precision_onnx_name(graph_file, precision)``."""
    return Path(directory) / precision_onnx_name(graph_file, precision)

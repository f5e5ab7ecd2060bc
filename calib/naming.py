"""File names of precision variants (defined with the I/O contract in ``edge_sameo.contract``).

``<graph>.onnx`` is the fp32 export; ``<graph>.fp16.onnx`` and ``<graph>.int8.onnx`` (Q/DQ)
sit beside it, and ``calib_meta.json`` records how each variant was made. The TensorRT
builder and every runtime look the files up through these helpers.
"""

from __future__ import annotations

from edge_sameo.contract import (
    CALIB_META_FILE,
    ONNX_PRECISIONS,
    precision_onnx_name,
    precision_onnx_path,
)

__all__ = ["CALIB_META_FILE", "ONNX_PRECISIONS", "precision_onnx_name", "precision_onnx_path"]

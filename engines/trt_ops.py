"""TensorRT ONNX-parser operator tables (onnx-tensorrt ``docs/operators.md``) and a checker.

The tables ship with the package (``engines/trt_onnx_ops/trt{8.5,8.6,10.1}.tsv``):
operator, supported (Y/N), types, restrictions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np
import onnx
from onnx import numpy_helper

TRT_VERSIONS = ("8.5", "8.6", "10.1")


@dataclass(frozen=True)
class OpSupport:
    op: str
    supported: bool
    types: str
    restrictions: str


def load_table(version: str) -> dict[str, OpSupport]:
    if version not in TRT_VERSIONS:
        raise ValueError(f"no operator table for TensorRT {version}; have {TRT_VERSIONS}")
    text = (
        resources.files("edge_sameo.engines").joinpath(f"trt_onnx_ops/trt{version}.tsv").read_text()
    )
    rows = [
        r for r in csv.reader(text.splitlines(), delimiter="\t") if r and not r[0].startswith("#")
    ]
    return {
        r[0]: OpSupport(
            r[0], r[1].strip() == "Y", r[2] if len(r) > 2 else "", r[3] if len(r) > 3 else ""
        )
        for r in rows
    }


def _constant_inputs(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


def check_trt_ops(model: onnx.ModelProto, version: str) -> list[str]:
    """Problems that would stop TensorRT ``version``'s ONNX parser (empty list: none).

    Checks that every operator is supported, and the restrictions listed in the
    tables that apply to the graphs we export: Resize modes (no cubic), Q/DQ zero
    points of 0, constant ``axes``/``K``/``axis`` inputs, LayerNormalization's single
    output.
    """
    table = load_table(version)
    graph = model.graph
    consts = _constant_inputs(graph)
    problems: list[str] = []
    for node in graph.node:
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        entry = table.get(node.op_type)
        if node.op_type == "Constant":
            continue
        if entry is None or not entry.supported:
            problems.append(f"TensorRT {version}: {where}: operator not supported by the parser")
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Resize":
            mode = attrs.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else str(mode)
            if mode not in ("nearest", "linear"):
                problems.append(
                    f"TensorRT {version}: {where}: Resize mode {mode!r} (only nearest/linear)"
                )
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = consts.get(node.input[2])
            if zp is None or np.any(zp != 0):
                problems.append(f"TensorRT {version}: {where}: zero point must be a constant 0")
        if (
            node.op_type in ("Unsqueeze", "Squeeze", "ReduceMean", "ReduceSum")
            and len(node.input) > 1
        ):
            if node.input[1] and node.input[1] not in consts:
                problems.append(f"TensorRT {version}: {where}: 'axes' must be a constant")
        if node.op_type == "TopK" and node.input[1] not in consts:
            problems.append(f"TensorRT {version}: {where}: 'K' must be an initializer")
        if node.op_type == "CumSum" and node.input[1] not in consts:
            problems.append(f"TensorRT {version}: {where}: 'axis' must be an initializer")
        if node.op_type == "LayerNormalization" and len([o for o in node.output if o]) > 1:
            problems.append(f"TensorRT {version}: {where}: only the first output is supported")
    return problems

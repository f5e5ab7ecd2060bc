"""FP16 variants of the exported graphs: ``<graph>.fp16.onnx`` beside ``<graph>.onnx``.

The cast pass is ONNX Runtime's ``onnxruntime.transformers.float16`` — the same converter
as ``onnxconverter_common.float16`` (ORT ships a maintained copy, so no new dependency):
float initializers and tensors become float16, blocked ops keep float32 with Casts at
their borders, and ``keep_io_types`` keeps the graph inputs/outputs float32 so the
contract (and every runtime's buffers) stay as they are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from edge_sameo.calib.meta import record_graph
from edge_sameo.calib.policy import KEEP_FLOAT_PATTERNS, compile_patterns, matching_nodes
from edge_sameo.contract import ExportContract, precision_onnx_path
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_bytes

#: Op types computed in float32: LayerNorm and its opset<17 decomposition (the variance
#: of 192..384 channels overflows float16's 65504 easily), Softmax (exp and the sum over
#: 4096 keys), the decoder's GroupNorm (exported as InstanceNormalization) and the
#: prompt encoder's sin/cos.
DEFAULT_FP16_OP_BLOCK: tuple[str, ...] = (
    "LayerNormalization",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Div",
    "Softmax",
    "InstanceNormalization",
    "Sin",
    "Cos",
)


@dataclass(frozen=True)
class Fp16Config:
    """op_block_list: op types kept float32 (add ``"Erf"`` to keep GELU float too).
    node_patterns: node-name regexes kept float32 (default: the decoder's last layers and
    the refiner's output convolution)."""

    op_block_list: tuple[str, ...] = DEFAULT_FP16_OP_BLOCK
    node_patterns: tuple[str, ...] = KEEP_FLOAT_PATTERNS

    def __post_init__(self) -> None:
        try:
            compile_patterns(self.node_patterns)
        except ValueError as exc:
            raise InputError(str(exc)) from None


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node follows its producers (in dependency waves).

    The converter appends the input Casts at the end; ONNX (and TensorRT's parser, which
    reads nodes in order) requires producers first.
    """
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise InputError(f"graph {graph.name!r} has a cycle or an undefined input")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for n in ready:
            known.update(n.output)
        ordered += ready
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(src: Path, dst: Path, cfg: Fp16Config) -> dict[str, Any]:
    """Write the float16 version of ``src`` to ``dst``; returns its ``calib_meta`` entry."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    blocked_nodes = matching_nodes(model, cfg.node_patterns)
    kept_ops = Counter(n.op_type for n in model.graph.node if n.op_type in cfg.op_block_list)
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(cfg.op_block_list),
        node_block_list=blocked_nodes,
    )
    topological_sort(converted.graph)
    atomic_write_bytes(dst, converted.SerializeToString())
    return {
        "precision": "fp16",
        "from": src.name,
        "io": "float32",
        "recipe": asdict(cfg),
        "kept_float": {"op_types": dict(kept_ops), "nodes": blocked_nodes},
    }


def build_fp16(onnx_dir: str | Path, cfg: Fp16Config | None = None) -> list[Path]:
    """``<graph>.fp16.onnx`` for every graph of the fp32 export in ``onnx_dir`` (encoder,
    decoder, refiner); each recorded in ``calib_meta.json``."""
    cfg = cfg or Fp16Config()
    onnx_dir = Path(onnx_dir)
    contract = ExportContract.read(onnx_dir)
    out = []
    for graph in contract.graphs:
        src = onnx_dir / graph.file
        if not src.is_file():
            raise InputError(f"{src} is missing (listed in the contract)")
        dst = precision_onnx_path(onnx_dir, graph.file, "fp16")
        record_graph(onnx_dir, dst, convert_fp16(src, dst, cfg))
        out.append(dst)
    return out

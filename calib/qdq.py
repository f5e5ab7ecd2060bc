"""Explicit-quantization INT8 graphs: ``<graph>.int8.onnx`` (Q/DQ) beside ``<graph>.onnx``.

The default recipe is TensorRT's: symmetric int8 everywhere (zero points 0), per-channel
weights on the output-channel axis, per-tensor activations, float bias, one Q/DQ pair per
consumer; only MatMul/Gemm/Conv are quantized, so LayerNorm, Softmax, GELU and the
residual Adds compute in float, as do the attention MatMuls (Q·Kᵀ, attention·V: see
``QdqConfig.quantize_attention``), and the decoder's last layers (``calib.policy``) stay
float entirely. Scales come from ONNX Runtime's static calibration over an
``ImageBatcher`` (real images; the decoder gets real fp32-encoder embeddings and boxes).

The other knobs (uint8 activations, QOperator format, reduce_range) exist for the CPU
study in ``docs/experiments/cpu_runtimes.md``; such graphs are ONNX Runtime–only.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from edge_sameo.backends.onnx_common import ort_session
from edge_sameo.calib.batcher import BatcherConfig, Feed, ImageBatcher
from edge_sameo.calib.meta import record_graph
from edge_sameo.calib.policy import KEEP_FLOAT_PATTERNS, compile_patterns, matching_nodes
from edge_sameo.calib.session import cpu_backend
from edge_sameo.contract import ExportContract, precision_onnx_path
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_bytes

QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
DEFAULT_QUANT_OPS = ("MatMul", "Gemm", "Conv")
METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class QdqConfig:
    """How ``<graph>.int8.onnx`` is made.

    op_types: op types to quantize (inputs get Q/DQ; outputs stay float).
    node_patterns: node-name regexes kept float (default: the decoder's last layers and the
        refiner's output convolution).
    quantize_attention: also quantize MatMuls whose both inputs are activations
        (Q·Kᵀ and attention·V). Off by default: over 4096 tokens most softmax
        probabilities are far below one int8 step of a per-tensor scale, and the ViT-Ti
        embedding came out 49 % off (rel L2) with them quantized vs 3 % without
        (``docs/experiments/cpu_runtimes.md``). TensorRT then runs attention in fp16.
    per_channel: per-output-channel weight scales (else one scale per tensor).
    method / percentile: calibration of activation ranges.
    activation_type / symmetric_activations / reduce_range / quant_format: CPU-study
        knobs; anything but int8 + symmetric + QDQ is not TensorRT-compatible.
    """

    op_types: tuple[str, ...] = DEFAULT_QUANT_OPS
    node_patterns: tuple[str, ...] = KEEP_FLOAT_PATTERNS
    quantize_attention: bool = False
    per_channel: bool = True
    method: str = "minmax"
    percentile: float = 99.999
    activation_type: str = "int8"
    symmetric_activations: bool = True
    reduce_range: bool = False
    quant_format: str = "qdq"

    def __post_init__(self) -> None:
        bad = [t for t in self.op_types if t not in QUANTIZABLE_OPS]
        if not self.op_types or bad:
            raise InputError(f"op_types must be a non-empty subset of {QUANTIZABLE_OPS}")
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 90.0 <= self.percentile <= 100.0:
            raise InputError(f"percentile must be in [90, 100], got {self.percentile}")
        if self.activation_type not in ("int8", "uint8"):
            raise InputError(f"activation_type must be int8 or uint8, not {self.activation_type!r}")
        if self.quant_format not in ("qdq", "qoperator"):
            raise InputError(f"quant_format must be qdq or qoperator, not {self.quant_format!r}")
        try:
            compile_patterns(self.node_patterns)
        except ValueError as exc:
            raise InputError(str(exc)) from None

    @property
    def trt_compatible(self) -> bool:
        """Symmetric int8 Q/DQ: what TensorRT's explicit quantization accepts."""
        return (
            self.activation_type == "int8"
            and self.symmetric_activations
            and self.quant_format == "qdq"
        )


class _FeedReader:
    """ONNX Runtime ``CalibrationDataReader`` over an iterator of feeds."""

    def __init__(self, feeds: Iterable[Feed]) -> None:
        self._it: Iterator[Feed] = iter(feeds)
        self.count = 0

    def get_next(self) -> Feed | None:
        feed = next(self._it, None)
        self.count += feed is not None
        return feed

    def rewind(self) -> None:  # ORT calls it between passes of some methods; one pass here
        pass


class _NoPreprocessHint(logging.Filter):
    """Drops ORT's "consider pre-processing" hint. Skipped on purpose: that step rewrites the
    graph with ORT's own optimisations, while the int8 graph must stay the export plus Q/DQ
    (TensorRT parses it, and the keep-float name patterns address its nodes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_ort_hints() -> Iterator[None]:
    hint = _NoPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def _ort_options(cfg: QdqConfig) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return {
        "quant_format": QuantFormat.QDQ if cfg.quant_format == "qdq" else QuantFormat.QOperator,
        "activation_type": QuantType.QInt8 if cfg.activation_type == "int8" else QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
        "calibrate_method": {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[cfg.method],
        "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range,
        "extra_options": {
            "ActivationSymmetric": cfg.symmetric_activations,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": cfg.symmetric_activations,
            "CalibPercentile": cfg.percentile,
            "MatMulConstBOnly": not cfg.quantize_attention,
            # TensorRT: a Q/DQ pair cannot be shared between consumers, and only int8
            # DequantizeLinear parses (no int32 bias); the bias add fuses anyway.
            "DedicatedQDQPair": True,
            "QuantizeBias": False,
        },
    }


def targeted_nodes(model: onnx.ModelProto, cfg: QdqConfig, excluded: Iterable[str]) -> set[str]:
    """Names of the nodes of the float ``model`` that ``cfg`` quantizes."""
    skip = set(excluded)
    consts = {i.name for i in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return {
        n.name
        for n in model.graph.node
        if n.op_type in cfg.op_types
        and n.name not in skip
        and (cfg.quantize_attention or n.op_type != "MatMul" or n.input[1] in consts)
    }


def keep_float_consumers_float(model: onnx.ModelProto, quantized: set[str]) -> int:
    """Rewire nodes outside ``quantized`` that read a DequantizeLinear output of an
    activation back to the float tensor; returns how many inputs were rewired.

    ORT gives a tensor with a single quantized consumer one Q/DQ pair that *all* consumers
    read — so a residual Add beside a quantized MatMul would see the int8-rounded tensor.
    Kept-float ops must compute on the float tensor (and TensorRT must not be tempted to
    fuse them into int8).
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    # DQ output -> the float tensor that its Q quantized (activations only).
    float_of: dict[str, str] = {}
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
            continue
        q = producer.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            float_of[dq.output[0]] = q.input[0]
    rewired = 0
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.name in quantized:
            continue
        for k, name in enumerate(node.input):
            if name in float_of:
                node.input[k] = float_of[name]
                rewired += 1
    return rewired


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the compute nodes that read a DequantizeLinear output (quantized inputs)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input)
    ]


def quantize_graph(src: Path, dst: Path, feeds: Iterable[Feed], cfg: QdqConfig) -> dict[str, Any]:
    """Calibrate ``src`` on ``feeds`` and write the quantized graph to ``dst``; returns its
    ``calib_meta`` entry (without the calibration-data description)."""
    from onnxruntime.quantization import quantize_static

    model = onnx.load(str(src))
    excluded = matching_nodes(model, cfg.node_patterns)
    # ORT's MatMulConstBOnly leaves an activation right operand float but still quantizes a
    # constant left one (weight @ activation, as in the decoder's few-query attention): the
    # MatMuls the recipe does not target are excluded outright.
    targets = targeted_nodes(model, cfg, excluded)
    matmuls = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    untargeted = sorted(matmuls - targets - set(excluded))
    reader = _FeedReader(feeds)
    with tempfile.TemporaryDirectory(prefix="edge-sameo-qdq-") as tmp, _quiet_ort_hints():
        raw = Path(tmp) / "quantized.onnx"
        quantize_static(
            str(src),
            str(raw),
            reader,
            op_types_to_quantize=list(cfg.op_types),
            nodes_to_exclude=[*excluded, *untargeted],
            **_ort_options(cfg),
        )
        quantized = onnx.load(str(raw))
    if reader.count == 0:
        raise InputError(f"no calibration data for {src.name}")
    skipped = set(excluded) & {n.name for n in model.graph.node if n.op_type in cfg.op_types}
    rewired = keep_float_consumers_float(quantized, targets) if cfg.quant_format == "qdq" else 0
    atomic_write_bytes(dst, quantized.SerializeToString())
    q_nodes = set(quantized_nodes(quantized))
    ops_in = Counter(n.op_type for n in model.graph.node if n.op_type != "Constant")
    ops_q = Counter(n.op_type for n in quantized.graph.node if n.name in q_nodes)
    return {
        "precision": "int8",
        "from": src.name,
        "io": "float32",
        "recipe": {**asdict(cfg), "trt_compatible": cfg.trt_compatible},
        "quantized": dict(ops_q),
        "kept_float": {
            "op_types": {t: c - ops_q.get(t, 0) for t, c in ops_in.items() if c > ops_q.get(t, 0)},
            # Only the excluded nodes that the recipe would otherwise have quantized.
            "nodes": [n.name for n in model.graph.node if n.name in skipped],
        },
        "rewired_float_inputs": rewired,
        "calibration_samples": reader.count,
    }


def build_int8(
    onnx_dir: str | Path,
    batcher_cfg: BatcherConfig,
    cfg: QdqConfig | None = None,
    *,
    threads: int = 0,
) -> list[Path]:
    """``<graph>.int8.onnx`` for every graph of the fp32 export in ``onnx_dir`` (encoder,
    decoder, refiner), calibrated on ``batcher_cfg``'s images; each recorded in
    ``calib_meta.json``."""
    cfg = cfg or QdqConfig()
    onnx_dir = Path(onnx_dir)
    contract = ExportContract.read(onnx_dir)
    batcher = ImageBatcher(batcher_cfg, contract.model.img_size)
    for graph in contract.graphs:
        if not (onnx_dir / graph.file).is_file():
            raise InputError(f"{onnx_dir / graph.file} is missing (listed in the contract)")
    calibration = batcher_cfg.describe()
    enc, dec = contract.encoder.file, contract.decoder.file
    # Each graph is calibrated on what it will see: the decoder on embeddings of the fp32
    # encoder, the refiner on the crops the predictor makes from the fp32 graphs' masks.
    feeds: dict[str, tuple[Iterable[Feed], dict[str, Any]]] = {
        enc: (batcher.encoder_feeds(), {}),
        dec: (batcher.decoder_feeds(ort_session(onnx_dir / enc, threads)), {"embeddings": enc}),
    }
    if contract.refiner is not None:
        feeds[contract.refiner.file] = (
            batcher.refiner_feeds(cpu_backend(onnx_dir, "fp32", threads)),
            {"crops": f"edge_sameo.predictor on {enc} + {dec}"},
        )
    out = []
    for graph_file, (graph_feeds, source) in feeds.items():
        dst = precision_onnx_path(onnx_dir, graph_file, "int8")
        entry = quantize_graph(onnx_dir / graph_file, dst, graph_feeds, cfg)
        record_graph(onnx_dir, dst, {**entry, "calibration": {**calibration, **source}})
        out.append(dst)
    return out

"""Automatic checks of every exported graph: ONNX Runtime vs PyTorch, and TensorRT ops."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from edge_sameo.contract import (
    BOXES,
    IMAGE_EMBEDDINGS,
    IOU_PREDICTIONS,
    LOW_RES_LOGITS,
    MODAL_IOU_PREDICTIONS,
    MODAL_LOW_RES_LOGITS,
    PIXELS,
    ExportContract,
)
from edge_sameo.errors import EdgeSameoError
from edge_sameo.modeling import EfficientSam
from edge_sameo.preprocess import normalize_resized
from engines.trt_ops import check_trt_ops

#: TensorRT versions every export must parse on; 8.5 (JetPack 5) only below opset 17.
TRT_TARGETS = ("8.6", "10.1")
MAX_REL_ERR = 1e-4


class ExportCheckError(EdgeSameoError):
    """An exported graph disagrees with PyTorch or would not parse on TensorRT."""


@dataclass
class CheckReport:
    rel_err: dict[str, float] = field(default_factory=dict)
    trt_versions: tuple[str, ...] = ()
    op_counts: dict[str, dict[str, int]] = field(default_factory=dict)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def torch_reference(
    model: EfficientSam, pixels: np.ndarray, boxes: np.ndarray
) -> dict[str, np.ndarray]:
    """The plain PyTorch outputs (the model as loaded, no export rewrites)."""
    s = model.config.img_size
    with torch.no_grad():
        emb = model.encode(normalize_resized(torch.from_numpy(pixels), s))
        b = torch.from_numpy(boxes)
        out = {IMAGE_EMBEDDINGS: emb.numpy()}
        logits, iou = model.decode_boxes(emb, b)
        out[LOW_RES_LOGITS], out[IOU_PREDICTIONS] = logits.numpy(), iou.numpy()
        if model.has_modal_decoder:
            logits, iou = model.decode_boxes(emb, b, decoder="modal")
            out[MODAL_LOW_RES_LOGITS], out[MODAL_IOU_PREDICTIONS] = logits.numpy(), iou.numpy()
    return out


def check_export(
    directory: str | Path,
    model: EfficientSam,
    *,
    max_rel_err: float = MAX_REL_ERR,
    box_counts: tuple[int, ...] = (1, 5),
) -> CheckReport:
    """Run both graphs on ONNX Runtime against PyTorch (several box counts, to prove
    the dynamic axis) and check their operators against the TensorRT parser tables.
    Raises ``ExportCheckError`` on the first problem."""
    import onnxruntime as ort

    from engines.export import reference_inputs

    directory = Path(directory)
    contract = ExportContract.read(directory)
    targets = TRT_TARGETS + (("8.5",) if contract.opset < 17 else ())
    report = CheckReport(trt_versions=targets)
    for graph in (contract.encoder, contract.decoder):
        proto = onnx.load(str(directory / graph.file))
        onnx.checker.check_model(proto)
        counts: dict[str, int] = {}
        for node in proto.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        report.op_counts[graph.name] = counts
        for version in targets:
            problems = check_trt_ops(proto, version)
            if problems:
                raise ExportCheckError(f"{directory / graph.file}: {problems[0]}")

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc = ort.InferenceSession(
        str(directory / contract.encoder.file), opts, providers=["CPUExecutionProvider"]
    )
    dec = ort.InferenceSession(
        str(directory / contract.decoder.file), opts, providers=["CPUExecutionProvider"]
    )
    for n in box_counts:
        inputs = reference_inputs(contract, seed=n, num_boxes=n)
        ref = torch_reference(model, inputs["pixels"], inputs["boxes"])
        (emb,) = enc.run(None, {PIXELS: inputs["pixels"]})
        outs = dec.run(None, {IMAGE_EMBEDDINGS: ref[IMAGE_EMBEDDINGS], BOXES: inputs["boxes"]})
        got = {IMAGE_EMBEDDINGS: emb, **dict(zip(contract.decoder.output_names, outs, strict=True))}
        for name, value in got.items():
            if value.shape != ref[name].shape:
                raise ExportCheckError(f"{name}: shape {value.shape}, expected {ref[name].shape}")
            err = rel_err(value, ref[name])
            report.rel_err[name] = max(report.rel_err.get(name, 0.0), err)
            if err > max_rel_err:
                raise ExportCheckError(
                    f"{name} differs from PyTorch: rel err {err:.2e} > {max_rel_err:.0e} (N={n})"
                )
    return report

"""Automatic checks of every exported graph: ONNX Runtime vs PyTorch, and TensorRT ops."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from edge_sameo.contract import (
    BOXES,
    CROPS,
    IMAGE_EMBEDDINGS,
    IOU_PREDICTIONS,
    LOW_RES_LOGITS,
    MODAL_IOU_PREDICTIONS,
    MODAL_LOW_RES_LOGITS,
    PIXELS,
    REFINED_LOGITS,
    ExportContract,
)
from edge_sameo.engines.trt_ops import check_trt_ops
from edge_sameo.errors import EdgeSameoError
from edge_sameo.modeling import EfficientSam
from edge_sameo.preprocess import normalize_resized

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


def torch_reference(model: EfficientSam, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The plain PyTorch outputs (the model as loaded, no export rewrites) for
    :func:`engines.export.reference_inputs`, keyed by output tensor name."""
    s = model.config.img_size
    with torch.no_grad():
        emb = model.encode(normalize_resized(torch.from_numpy(inputs[PIXELS]), s))
        b = torch.from_numpy(inputs[BOXES])
        out = {IMAGE_EMBEDDINGS: emb.numpy()}
        logits, iou = model.decode_boxes(emb, b)
        out[LOW_RES_LOGITS], out[IOU_PREDICTIONS] = logits.numpy(), iou.numpy()
        if model.has_modal_decoder:
            logits, iou = model.decode_boxes(emb, b, decoder="modal")
            out[MODAL_LOW_RES_LOGITS], out[MODAL_IOU_PREDICTIONS] = logits.numpy(), iou.numpy()
        if model.refiner is not None and CROPS in inputs:
            # Batch norm as exported (running statistics), whatever mode the model is in.
            training = model.refiner.training
            out[REFINED_LOGITS] = model.refiner.eval()(torch.from_numpy(inputs[CROPS])).numpy()
            model.refiner.train(training)
    return out


def check_export(
    directory: str | Path,
    model: EfficientSam,
    *,
    max_rel_err: float = MAX_REL_ERR,
    box_counts: tuple[int, ...] = (1, 3, 8),
) -> CheckReport:
    """Run every graph of the export on ONNX Runtime against PyTorch (several box counts,
    to prove the dynamic axis) and check their operators against the TensorRT parser
    tables. Raises ``ExportCheckError`` on the first problem."""
    from edge_sameo.backends.onnx_common import ort_session
    from edge_sameo.engines.export import reference_inputs

    directory = Path(directory)
    contract = ExportContract.read(directory)
    targets = TRT_TARGETS + (("8.5",) if contract.opset < 17 else ())
    report = CheckReport(trt_versions=targets)
    for graph in contract.graphs:
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

    sessions = {graph.name: ort_session(directory / graph.file) for graph in contract.graphs}
    for n in box_counts:
        inputs = reference_inputs(contract, seed=n, num_boxes=n)
        ref = torch_reference(model, inputs)
        # Each graph gets PyTorch's upstream outputs (the decoder the reference embedding),
        # so an error is charged to the graph that made it.
        feeds = {**inputs, **ref}
        got: dict[str, np.ndarray] = {}
        for graph in contract.graphs:
            outs = sessions[graph.name].run(None, {k: feeds[k] for k in graph.input_names})
            got.update(zip(graph.output_names, outs, strict=True))
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

"""Accuracy of a precision variant against the fp32 graphs, on held-out images.

Per image: the embedding's relative L2 error ``‖e − e₃₂‖ / ‖e₃₂‖``. Per box, end to end
(precision encoder → precision decoder vs fp32 encoder → fp32 decoder): each side picks
its best candidate by its own predicted IoU — what a user would see — the low-res logits
are upsampled bicubically to the image and thresholded at logit ≥ 0 (as the predictor
does), and the two masks are compared by IoU. With a refiner, its logits are compared on
the same crops (fp32's: the refiner graph's own error), and the predictor's final masks
(each side end to end: its decoders, windows, crops and refiner) by IoU. Both sides run
through ``edge_sameo.predictor.AmodalPredictor``, so they see the app's own path. On
seeded random weights the masks are noise-like, so mask gates only mean something on
trained weights; the numbers are reported either way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.base import DecoderOutput
from edge_sameo.backends.recording import RecordingBackend
from edge_sameo.calib.batcher import ImageBatcher
from edge_sameo.calib.session import cpu_backend
from edge_sameo.contract import (
    IOU_PREDICTIONS,
    LOW_RES_LOGITS,
    MODAL_IOU_PREDICTIONS,
    MODAL_LOW_RES_LOGITS,
    ExportContract,
    precision_onnx_path,
)
from edge_sameo.errors import InputError
from edge_sameo.masks import mask_iou
from edge_sameo.predictor import AmodalPredictor, Prediction
from edge_sameo.predictor import best_masks as predictor_best_masks

HEADS = ((LOW_RES_LOGITS, IOU_PREDICTIONS), (MODAL_LOW_RES_LOGITS, MODAL_IOU_PREDICTIONS))


@dataclass(frozen=True)
class Gates:
    """Pass/fail thresholds; None = not gated. emb_rel_err: max relative L2 error of any
    image's embedding. mask_iou: min mean mask IoU of every decoder head and of the
    refiner's final masks."""

    emb_rel_err: float | None = None
    mask_iou: float | None = None

    def __post_init__(self) -> None:
        if self.emb_rel_err is not None and not self.emb_rel_err >= 0:
            raise InputError(f"--gate-emb-rel-err must be >= 0, got {self.emb_rel_err}")
        if self.mask_iou is not None and not 0.0 <= self.mask_iou <= 1.0:
            raise InputError(f"--gate-mask-iou must be in [0, 1], got {self.mask_iou}")


@dataclass(frozen=True)
class HeadAccuracy:
    """One decoder head over all held-out boxes.

    mean_iou / min_iou: mask IoU vs fp32 of each side's best mask. same_choice: fraction
    of boxes where both sides chose the same candidate. max_iou_pred_err: largest
    |Δ predicted IoU| over all candidates.
    """

    output: str
    boxes: int
    mean_iou: float
    min_iou: float
    same_choice: float
    max_iou_pred_err: float


@dataclass(frozen=True)
class RefinerAccuracy:
    """The refiner over all held-out boxes.

    logits_rel_err_max: largest relative L2 error of one image's (N, 2, R, R) refined
    logits, both sides given the same (fp32) crops. amodal_* / visible_*: mask IoU vs fp32
    of the predictor's final masks, each side end to end (its own decoders and crops).
    """

    boxes: int
    logits_rel_err_max: float
    amodal_mean_iou: float
    amodal_min_iou: float
    visible_mean_iou: float
    visible_min_iou: float


@dataclass(frozen=True)
class AccuracyReport:
    """Result of ``compare_precision``: embedding errors per image, mask IoU per head (and
    the refiner's agreement when the export has one)."""

    precision: str
    images: int
    emb_rel_err_mean: float
    emb_rel_err_max: float
    heads: tuple[HeadAccuracy, ...]
    files: dict[str, str] = field(default_factory=dict)
    eval_data: dict[str, Any] = field(default_factory=dict)
    refiner: RefinerAccuracy | None = None

    def mask_ious(self) -> dict[str, float]:
        """Mean mask IoU vs fp32 of every decoder head and of the refiner's masks."""
        out = {h.output: h.mean_iou for h in self.heads}
        if self.refiner is not None:
            out["refined amodal"] = self.refiner.amodal_mean_iou
            out["refined visible"] = self.refiner.visible_mean_iou
        return out

    def failures(self, gates: Gates) -> list[str]:
        """One line per missed gate (empty: all passed). NaN never passes."""
        out = []
        if gates.emb_rel_err is not None and not self.emb_rel_err_max <= gates.emb_rel_err:
            out.append(f"embedding rel err {self.emb_rel_err_max:.3g} > gate {gates.emb_rel_err:g}")
        if gates.mask_iou is not None:
            for name, iou in self.mask_ious().items():
                if not iou >= gates.mask_iou:
                    out.append(f"{name}: mean mask IoU {iou:.4f} < {gates.mask_iou:g}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_table(self) -> str:
        """A readable summary (fixed-width table)."""
        lines = [
            f"{self.precision} vs fp32 on {self.images} held-out images "
            f"({', '.join(f'{k}={v}' for k, v in self.files.items())})",
            f"  embedding rel L2 err: mean {self.emb_rel_err_mean:.3e}  max "
            f"{self.emb_rel_err_max:.3e}",
            f"  {'head':<22}{'boxes':>6}{'mean IoU':>10}{'min IoU':>9}{'same pick':>11}"
            f"{'max dIoU':>10}",
        ]
        for h in self.heads:
            lines.append(
                f"  {h.output:<22}{h.boxes:>6}{h.mean_iou:>10.4f}{h.min_iou:>9.4f}"
                f"{h.same_choice:>11.1%}{h.max_iou_pred_err:>10.4f}"
            )
        r = self.refiner
        if r is not None:
            for name, mean, low in (
                ("refined amodal", r.amodal_mean_iou, r.amodal_min_iou),
                ("refined visible", r.visible_mean_iou, r.visible_min_iou),
            ):
                lines.append(f"  {name:<22}{r.boxes:>6}{mean:>10.4f}{low:>9.4f}{'-':>11}{'-':>10}")
            lines.append(
                f"  refiner logits rel L2 err on the same crops: max {r.logits_rel_err_max:.3e}"
            )
        return "\n".join(lines)


def rel_l2(a: NDArray[np.float32], ref: NDArray[np.float32]) -> float:
    """‖a − ref‖ / ‖ref‖ in float64 (inf when ref is 0 and a is not)."""
    num = float(np.linalg.norm((a.astype(np.float64) - ref).ravel()))
    den = float(np.linalg.norm(ref.astype(np.float64).ravel()))
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def best_masks(
    logits: NDArray[np.float32], iou: NDArray[np.float32], image_hw: tuple[int, int]
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """(N, M, L, L) logits + (N, M) IoU -> (N, H, W) masks of the best candidates and
    (N,) their indices — the predictor's own rule (``edge_sameo.predictor.best_masks``)."""
    masks, _ = predictor_best_masks(logits, iou, image_hw)
    return masks, iou.argmax(axis=1)


def decoder_outputs(out: DecoderOutput) -> dict[str, NDArray[np.float32]]:
    """A runtime's decoder result keyed by the decoder graph's output names."""
    named = {
        LOW_RES_LOGITS: out.low_res_logits,
        IOU_PREDICTIONS: out.iou_predictions,
        MODAL_LOW_RES_LOGITS: out.modal_low_res_logits,
        MODAL_IOU_PREDICTIONS: out.modal_iou_predictions,
    }
    return {k: v for k, v in named.items() if v is not None}


def compare_precision(
    onnx_dir: str | Path, precision: str, batcher: ImageBatcher, *, threads: int = 0
) -> AccuracyReport:
    """Run fp32 and ``precision`` graphs of ``onnx_dir`` on ``batcher``'s images (which
    should be held out from calibration) and measure how far apart they are."""
    onnx_dir = Path(onnx_dir)
    contract = ExportContract.read(onnx_dir)
    for p in ("fp32", precision):
        for g in contract.graphs:
            path = precision_onnx_path(onnx_dir, g.file, p)
            if not path.is_file():
                raise InputError(f"{path} is missing")
    sides = {p: RecordingBackend(cpu_backend(onnx_dir, p, threads)) for p in ("fp32", precision)}
    predictors = {p: AmodalPredictor(backend) for p, backend in sides.items()}
    heads = [(lo, iou) for lo, iou in HEADS if lo in contract.decoder.output_names]
    emb_errs: list[float] = []
    ious: dict[str, list[float]] = {lo: [] for lo, _ in heads}
    same: dict[str, list[bool]] = {lo: [] for lo, _ in heads}
    pred_err: dict[str, float] = {lo: 0.0 for lo, _ in heads}
    refined: dict[str, list[float]] = {"amodal": [], "visible": [], "logits": []}
    for sample in batcher.samples("held-out"):
        hw = (int(sample.image.shape[0]), int(sample.image.shape[1]))
        embs: dict[str, NDArray[np.float32]] = {}
        outs: dict[str, dict[str, NDArray[np.float32]]] = {}
        final: dict[str, Prediction] = {}
        for p, predictor in predictors.items():
            predictor.set_image(sample.image)
            final[p] = predictor.predict(sample.boxes)
            decoded = sides[p].decoded
            assert decoded is not None
            embs[p], outs[p] = predictor.image_embedding, decoder_outputs(decoded)
        ref, got = outs["fp32"], outs[precision]
        emb_errs.append(rel_l2(embs[precision], embs["fp32"]))
        for lo, iou in heads:
            m_ref, b_ref = best_masks(ref[lo], ref[iou], hw)
            m_got, b_got = best_masks(got[lo], got[iou], hw)
            ious[lo] += [mask_iou(a, b) for a, b in zip(m_got, m_ref, strict=True)]
            same[lo] += list(b_ref == b_got)
            pred_err[lo] = max(pred_err[lo], float(np.abs(got[iou] - ref[iou]).max()))
        if contract.has_refiner:
            f_got, f_ref = final[precision], final["fp32"]
            for kind, r_got, r_ref in (
                ("amodal", f_got.masks, f_ref.masks),
                ("visible", f_got.visible_masks, f_ref.visible_masks),
            ):
                assert r_got is not None and r_ref is not None
                refined[kind] += [mask_iou(a, b) for a, b in zip(r_got, r_ref, strict=True)]
            crops = sides["fp32"].crops
            assert crops is not None
            same_crops = sides[precision].inner.refine(crops)
            refined["logits"].append(rel_l2(same_crops, sides["fp32"].inner.refine(crops)))
    if not emb_errs:
        raise InputError(
            f"no held-out images from {batcher.cfg.source} source "
            f"(items {batcher.cfg.start}..): give more images or a smaller --count"
        )
    return AccuracyReport(
        precision=precision,
        images=len(emb_errs),
        emb_rel_err_mean=float(np.mean(emb_errs)),
        emb_rel_err_max=float(np.max(emb_errs)),
        heads=tuple(
            HeadAccuracy(
                output=lo,
                boxes=len(ious[lo]),
                mean_iou=float(np.mean(ious[lo])),
                min_iou=float(np.min(ious[lo])),
                same_choice=float(np.mean(same[lo])),
                max_iou_pred_err=pred_err[lo],
            )
            for lo, _ in heads
        ),
        files={
            g.name: precision_onnx_path(onnx_dir, g.file, precision).name for g in contract.graphs
        },
        eval_data=batcher.cfg.describe(),
        refiner=RefinerAccuracy(
            boxes=len(refined["amodal"]),
            logits_rel_err_max=float(np.max(refined["logits"])),
            amodal_mean_iou=float(np.mean(refined["amodal"])),
            amodal_min_iou=float(np.min(refined["amodal"])),
            visible_mean_iou=float(np.mean(refined["visible"])),
            visible_min_iou=float(np.min(refined["visible"])),
        )
        if refined["amodal"]
        else None,
    )

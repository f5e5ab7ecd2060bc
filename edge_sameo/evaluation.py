"""Score amodal predictions against COCO-amodal ground truth.

Predictions are COCO results: ``image_id``, ``category_id``, ``score`` and ``segmentation``
(the amodal mask, COCO RLE or polygons), optionally ``visible_segmentation``.

Metrics (``EvalReport.to_dict()`` keys):

* ``AP``, ``AP50``, ``AP75``, ``AR`` — pycocotools COCOeval on the amodal masks (``segm``;
  AR is AR@100). ``class_agnostic`` sets every category to one, as in the SAMEO paper.
* ``mIoU`` — mean amodal IoU over matched instances. Matching rule, per image: predictions
  in descending score order each take the still unmatched ground truth of the same
  category (any category when class-agnostic) with the highest amodal IoU; the pair counts
  when that IoU is >= ``match_iou`` (0.5). Unmatched ground truth is counted
  (``unmatched_gt``), not averaged in.
* ``mIoU_occ`` — for matched instances whose ground-truth occluded region
  ``occ = amodal & ~visible`` is non-empty, IoU inside that region:
  ``|pred ∩ occ| / |occ|`` (the ground truth restricted to ``occ`` is ``occ`` itself, so
  the union is ``occ``). It is how much of the hidden part was recovered.
* ``per_bucket`` — ``mIoU`` / ``mIoU_occ`` / counts by ground-truth occlusion rate:
  ``0-0.1`` ([0, 0.1]), ``0.1-0.3`` ((0.1, 0.3]), ``0.3-0.5`` ((0.3, 0.5]), ``>0.5``.
* ``baseline`` — the same metrics for the trivial "amodal = visible" predictor: each
  ground-truth instance predicted by its **ground-truth visible mask** (score 1), so every
  report shows what amodal completion adds over a perfect modal segmenter. It is scored
  by exactly the same rules, so identical predictions give identical figures; note that
  the IoU >= 0.5 match drops its most occluded instances from ``mIoU`` (see its
  ``unmatched_gt``). Its ``mIoU_occ`` is 0 by construction. Absent when the ground truth
  has no visible masks.
  (Predicted ``visible_segmentation`` is accepted in the input but not scored.)

Figures are None where undefined (no matched occluded instance, no ground truth).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from edge_sameo.data.coco_amodal import AmodalDataset, load_amodal_coco, to_rle
from edge_sameo.errors import InputError
from edge_sameo.masks import rle_to_json
from edge_sameo.paths import require_file

#: Occlusion buckets by ground-truth occlusion rate: (key, upper bound inclusive); the
#: last bucket takes everything above 0.5.
BUCKETS: tuple[tuple[str, float], ...] = (
    ("0-0.1", 0.1),
    ("0.1-0.3", 0.3),
    ("0.3-0.5", 0.5),
    (">0.5", 1.0),
)


def bucket_of(occlusion_rate: float) -> str:
    """The ``BUCKETS`` key of an occlusion rate: [0, 0.1], (0.1, 0.3], (0.3, 0.5], > 0.5."""
    for key, hi in BUCKETS[:-1]:
        if occlusion_rate <= hi:
            return key
    return BUCKETS[-1][0]


@dataclass(frozen=True)
class EvalReport:
    """Evaluation figures (see the module docstring for their definitions)."""

    AP: float | None
    AP50: float | None
    AP75: float | None
    AR: float | None
    mIoU: float | None
    mIoU_occ: float | None
    per_bucket: dict[str, dict[str, Any]]
    num_gt: int
    num_pred: int
    matched: int
    unmatched_gt: int
    class_agnostic: bool
    baseline: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "AP": self.AP,
            "AP50": self.AP50,
            "AP75": self.AP75,
            "AR": self.AR,
            "mIoU": self.mIoU,
            "mIoU_occ": self.mIoU_occ,
            "per_bucket": self.per_bucket,
            "baseline": self.baseline,
            "num_gt": self.num_gt,
            "num_pred": self.num_pred,
            "matched": self.matched,
            "unmatched_gt": self.unmatched_gt,
            "class_agnostic": self.class_agnostic,
        }

    def format_table(self) -> str:
        """A plain-text table: this model vs the amodal = visible baseline."""

        def fmt(v: Any) -> str:
            return "   -  " if v is None else f"{100 * float(v):6.2f}"

        base = self.baseline or {}
        head = f"{'metric':<28}{'model':>8}" + (f"{'visible':>10}" if base else "")
        lines = [
            f"amodal evaluation ({'class-agnostic' if self.class_agnostic else 'per class'}): "
            f"{self.num_gt} GT, {self.num_pred} predictions, {self.matched} matched, "
            f"{self.unmatched_gt} GT unmatched",
            head,
            "-" * len(head),
        ]
        rows: list[tuple[str, Any, Any]] = [
            (k, getattr(self, k), base.get(k)) for k in ("AP", "AP50", "AP75", "AR")
        ]
        rows += [
            ("mIoU", self.mIoU, base.get("mIoU")),
            ("mIoU_occ", self.mIoU_occ, base.get("mIoU_occ")),
        ]
        for key, _ in BUCKETS:
            ours = self.per_bucket.get(key, {})
            theirs = (base.get("per_bucket") or {}).get(key, {})
            n = ours.get("count", 0)
            rows.append((f"mIoU     [occ {key}] n={n}", ours.get("mIoU"), theirs.get("mIoU")))
            rows.append((f"mIoU_occ [occ {key}]", ours.get("mIoU_occ"), theirs.get("mIoU_occ")))
        for name, ours_v, base_v in rows:
            line = f"{name:<28}{fmt(ours_v):>8}"
            if base:
                line += f"{fmt(base_v):>10}"
            lines.append(line)
        lines.append("(figures in %, '-' = undefined)")
        return "\n".join(lines)


# --------------------------------------------------------------------------- inputs


def load_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Read a COCO results JSON (a list of prediction dicts)."""
    path = require_file(path, "predictions file")
    try:
        preds = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})") from None
    if isinstance(preds, dict) and isinstance(preds.get("annotations"), list):
        preds = preds["annotations"]  # a COCO document given as predictions
    if not isinstance(preds, list):
        raise InputError(f"{path}: predictions must be a JSON list of COCO results")
    return preds


@dataclass(frozen=True, eq=False)
class _Pred:
    image_id: int
    category_id: int
    score: float
    rle: dict[str, Any]


def _normalise_preds(
    preds: Sequence[Mapping[str, Any]], gt: AmodalDataset, source: str
) -> list[_Pred]:
    out = []
    for n, p in enumerate(preds):
        where = f"{source}: prediction #{n}"
        try:
            image_id, category_id = int(p["image_id"]), int(p["category_id"])
            segm = p["segmentation"]
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"{where}: needs integer 'image_id', 'category_id' and a 'segmentation'"
            ) from None
        try:
            img = gt.image(image_id)
        except InputError:
            raise InputError(f"{where}: image_id {image_id} is not in the ground truth") from None
        try:
            rle = to_rle(segm, img.height, img.width, poly_tolerance=float("inf"))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        out.append(_Pred(image_id, category_id, float(p.get("score", 1.0)), rle))
    return out


# --------------------------------------------------------------------------- metrics


def _coco_ap(
    gt: AmodalDataset, preds: Sequence[_Pred], class_agnostic: bool
) -> tuple[float | None, float | None, float | None, float | None]:
    """(AP, AP50, AP75, AR@100) of amodal masks, or Nones when there is no ground truth."""
    if not gt.annotations:
        return None, None, None, None
    if not preds:
        return 0.0, 0.0, 0.0, 0.0
    cat = (lambda c: 1) if class_agnostic else (lambda c: c)
    cats = (
        [{"id": 1, "name": "object"}]
        if class_agnostic
        else [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in gt.categories]
    )
    if not class_agnostic and not cats:
        cats = [{"id": c, "name": str(c)} for c in sorted({a.category_id for a in gt.annotations})]
    doc = {
        "images": [{"id": i.id, "width": i.width, "height": i.height} for i in gt.images],
        "categories": cats,
        "annotations": [
            {
                "id": a.id,
                "image_id": a.image_id,
                "category_id": cat(a.category_id),
                "segmentation": rle_to_json(a.segmentation),
                "area": a.area,
                "bbox": a.bbox,
                "iscrowd": a.iscrowd,
            }
            for a in gt.annotations
        ],
    }
    results = [
        {
            "image_id": p.image_id,
            "category_id": cat(p.category_id),
            "score": p.score,
            "segmentation": rle_to_json(p.rle),
        }
        for p in preds
    ]
    # pycocotools reports by printing; keep the library quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = doc
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [None if s < 0 else float(s) for s in ev.stats]
    return stats[0], stats[1], stats[2], stats[8]


def _match(
    gt: AmodalDataset, preds: Sequence[_Pred], class_agnostic: bool, match_iou: float
) -> list[tuple[int, dict[str, Any]]]:
    """Greedy matching (see module docstring): [(gt annotation index, pred rle)]."""
    by_image: dict[int, list[_Pred]] = {}
    for p in preds:
        by_image.setdefault(p.image_id, []).append(p)
    index = {id(a): n for n, a in enumerate(gt.annotations)}
    pairs: list[tuple[int, dict[str, Any]]] = []
    for image_id, plist in by_image.items():
        gts = gt.annotations_of(image_id)
        if not gts:
            continue
        plist = sorted(plist, key=lambda p: -p.score)
        ious = np.asarray(
            mask_utils.iou([p.rle for p in plist], [a.segmentation for a in gts], [0] * len(gts)),
            np.float64,
        ).reshape(len(plist), len(gts))
        taken = np.zeros(len(gts), bool)
        for r, p in enumerate(plist):
            row = ious[r].copy()
            row[taken] = -1.0
            if not class_agnostic:
                row[[a.category_id != p.category_id for a in gts]] = -1.0
            best = int(np.argmax(row))
            if row[best] >= match_iou:
                taken[best] = True
                pairs.append((index[id(gts[best])], p.rle))
    return pairs


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _iou_stats(
    gt: AmodalDataset, pairs: Sequence[tuple[int, dict[str, Any]]]
) -> tuple[float | None, float | None, dict[str, dict[str, Any]]]:
    """(mIoU, mIoU_occ, per_bucket) over matched (gt index, pred RLE) pairs."""
    ious: list[float] = []
    occ_ious: list[float] = []
    buckets: dict[str, dict[str, list[float]]] = {k: {"iou": [], "occ": []} for k, _ in BUCKETS}
    for n, pred_rle in pairs:
        ann = gt.annotations[n]
        iou = float(mask_utils.iou([pred_rle], [ann.segmentation], [0])[0][0])
        ious.append(iou)
        key = bucket_of(ann.occlusion_rate)
        buckets[key]["iou"].append(iou)
        if ann.visible is not None:
            occ = occluded_region(ann.amodal_mask(), ann.visible_mask())
            if occ.any():
                pred = np.asarray(mask_utils.decode(pred_rle), bool)
                occ_iou = occluded_iou(pred, occ)
                occ_ious.append(occ_iou)
                buckets[key]["occ"].append(occ_iou)
    per_bucket: dict[str, dict[str, Any]] = {}
    for key, _ in BUCKETS:
        b = buckets[key]
        per_bucket[key] = {
            "count": len(b["iou"]),
            "count_occ": len(b["occ"]),
            "mIoU": _mean(b["iou"]),
            "mIoU_occ": _mean(b["occ"]),
        }
    return _mean(ious), _mean(occ_ious), per_bucket


def occluded_region(amodal: NDArray[np.bool_], visible: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(H, W) bool: the hidden part of an object, amodal & ~visible."""
    return np.asarray(amodal & ~visible, dtype=bool)


def occluded_iou(pred: NDArray[np.bool_], occ: NDArray[np.bool_]) -> float:
    """IoU inside the ground-truth occluded region ``occ`` (both (H, W) bool):
    ``|pred ∩ occ| / |occ|``; 1.0 when ``occ`` is empty (nothing to recover)."""
    total = int(np.count_nonzero(occ))
    return 1.0 if total == 0 else int(np.count_nonzero(pred & occ)) / total


def evaluate(
    gt: AmodalDataset | str | Path,
    preds: Sequence[Mapping[str, Any]] | str | Path,
    class_agnostic: bool = False,
    match_iou: float = 0.5,
    baseline: bool = True,
) -> EvalReport:
    """Evaluate amodal predictions against a COCO-amodal ground truth (see module doc).

    gt: a dataset or a path to any layout ``load_amodal_coco`` reads (visible masks are
    optional; without them mIoU_occ and the baseline are undefined). preds: COCO results
    or a path to their JSON. An empty prediction list scores 0.
    """
    if isinstance(gt, (str, Path)):
        gt = load_amodal_coco(gt, require_visible=False)
    source = "predictions"
    if isinstance(preds, (str, Path)):
        source = str(preds)
        preds = load_predictions(preds)
    if not 0.0 < match_iou <= 1.0:
        raise InputError(f"match_iou must be in (0, 1], got {match_iou}")
    plist = _normalise_preds(preds, gt, source)
    ap, ap50, ap75, ar = _coco_ap(gt, plist, class_agnostic)
    pairs = _match(gt, plist, class_agnostic, match_iou)
    miou, miou_occ, per_bucket = _iou_stats(gt, pairs)
    base: dict[str, Any] | None = None
    if baseline and gt.annotations and gt.has_visible:
        base_preds = [
            _Pred(a.image_id, a.category_id, 1.0, a.visible)
            for a in gt.annotations
            if a.visible is not None
        ]
        b_ap, b_ap50, b_ap75, b_ar = _coco_ap(gt, base_preds, class_agnostic)
        b_pairs = _match(gt, base_preds, class_agnostic, match_iou)
        b_miou, b_occ, b_buckets = _iou_stats(gt, b_pairs)
        base = {
            "source": "ground-truth visible masks",
            "AP": b_ap,
            "AP50": b_ap50,
            "AP75": b_ap75,
            "AR": b_ar,
            "mIoU": b_miou,
            "mIoU_occ": b_occ,
            "per_bucket": b_buckets,
            "matched": len(b_pairs),
            "unmatched_gt": len(gt.annotations) - len(b_pairs),
        }
    return EvalReport(
        AP=ap,
        AP50=ap50,
        AP75=ap75,
        AR=ar,
        mIoU=miou,
        mIoU_occ=miou_occ,
        per_bucket=per_bucket,
        num_gt=len(gt.annotations),
        num_pred=len(plist),
        matched=len(pairs),
        unmatched_gt=len(gt.annotations) - len(pairs),
        class_agnostic=class_agnostic,
        baseline=base,
    )

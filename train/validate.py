"""Validation: box-prompted predictions on a held-out set, scored by ``edge_sameo.evaluation``.

Each ground-truth instance is prompted with its exact (unjittered) modal or amodal box;
the kept mask is the predictor's: the candidate with the highest predicted IoU,
upsampled bicubically to the image and thresholded at logit 0
(``edge_sameo.predictor.best_masks``). Figures (keys of :func:`validate`'s result):

* the evaluator's ``mIoU``, ``mIoU_occ``, ``AP`` and, per occlusion bucket, ``mIoU`` and
  ``mIoU_occ``; ``mIoU_occluded``: its matched-instance mIoU over the occluded buckets
  (occlusion rate > 0.1), and ``baseline_*`` the same for "amodal = visible mask";
* ``inst_mIoU`` / ``inst_mIoU_occluded``: the mean IoU of *every* prompted instance
  (no matching, nothing dropped) — all, and occlusion rate > 0.1 — with
  ``inst_baseline_mIoU_occluded`` = mean(1 - occlusion rate), the visible mask's IoU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pycocotools import mask as mask_utils

from edge_sameo.checkpoint import load_model
from edge_sameo.data import AmodalAnnotation, AmodalDataset
from edge_sameo.evaluation import BUCKETS, evaluate
from edge_sameo.masks import rle_from_mask, rle_to_json
from edge_sameo.modeling import EfficientSam
from edge_sameo.predictor import AmodalPredictor, best_masks
from edge_sameo.train.cache import EmbeddingCache, encode_prepared
from edge_sameo.train.config import DatasetSpec
from edge_sameo.train.data import PreparedSet, prepare_dataset

#: An instance counts as occluded above this occlusion rate (the evaluator's buckets).
OCCLUDED = 0.1
#: ... and counts as whole (nothing to complete) below this one.
WHOLE = 0.05


def prompt_boxes(ps: PreparedSet, first: int, count: int, prompt: str) -> torch.Tensor:
    """(n, 4) S-frame prompt boxes of instances ``first : first + count``; a modal prompt
    falls back to the amodal box for an instance with no visible pixel."""
    sl = slice(first, first + count)
    amodal = np.asarray(ps.amodal_box[sl])
    if prompt == "amodal":
        return torch.from_numpy(amodal.copy())
    visible = np.asarray(ps.visible_box[sl])
    hidden = np.asarray(ps.visible_area[sl]) == 0
    return torch.from_numpy(np.where(hidden[:, None], amodal, visible).astype(np.float32))


Decoded = tuple[int, tuple[int, int], NDArray[np.float32], NDArray[np.float32]]


@torch.no_grad()
def decode_images(
    model: EfficientSam,
    ps: PreparedSet,
    prompt: str,
    decoder: str = "mask",
    cache: EmbeddingCache | None = None,
    max_images: int | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[Decoded]:
    """Per image of ``ps`` (the first ``max_images``): its index, (H, W), and the decoder's
    (n, 3, L, L) logits and (n, 3) IoU for its instances prompted with ``prompt`` boxes,
    in the order of ``ps.first[i] : ps.first[i] + ps.count[i]``. The model is in eval mode
    meanwhile."""
    was_training = model.training
    model.eval()
    n = ps.num_images if max_images is None else min(max_images, ps.num_images)
    try:
        for i in range(n):
            if cache is not None:
                emb = cache.get([i]).to(device)
            else:
                emb = encode_prepared(model, ps.pixels_tensor([i]), device)
            first, count = int(ps.first[i]), int(ps.count[i])
            boxes = prompt_boxes(ps, first, count, prompt).to(device)
            logits, iou = model.decode_boxes(emb, boxes, True, decoder)
            h, w = (int(v) for v in ps.image_hw[i])
            yield i, (h, w), logits.cpu().numpy(), iou.cpu().numpy()
    finally:
        model.train(was_training)


def coco_results(ps: PreparedSet, decoded: Iterable[Decoded]) -> list[dict[str, Any]]:
    """COCO results (one per instance, with ``ann_id``) of :func:`decode_images`' output:
    each instance's kept mask as the app keeps it (``best_masks``)."""
    results: list[dict[str, Any]] = []
    for i, hw, logits, iou in decoded:
        masks, scores = best_masks(logits, iou, hw)
        first = int(ps.first[i])
        for j in range(len(masks)):
            results.append(
                {
                    "image_id": int(ps.image_ids[i]),
                    "category_id": int(ps.category[first + j]),
                    "score": float(scores[j]),
                    "segmentation": rle_to_json(rle_from_mask(masks[j])),
                    "ann_id": int(ps.ann_ids[first + j]),
                }
            )
    return results


def predictor_results(
    predictor: AmodalPredictor,
    ds: AmodalDataset,
    prompt: str,
    max_images: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """COCO results (one per instance, with ``ann_id``) through the app's own path: the
    predictor (encoder, decoders, refiner, full-size masks) on each image of ``ds``,
    every instance prompted with its exact ``prompt`` box in image pixels (a modal prompt
    falls back to the amodal box for an instance with no visible pixel); amodal boxes are
    passed as such (``amodal_boxes``: the masks are cut to them). Returns the
    amodal masks' results and the visible masks' (None without a modal decoder)."""
    from edge_sameo.masks import rle_area, rle_xywh

    amodal: list[dict[str, Any]] = []
    visible: list[dict[str, Any]] = []
    images = ds.images if max_images is None else ds.images[:max_images]
    for img in images:
        anns = ds.annotations_of(img.id)
        if not anns:
            continue
        boxes = []
        for a in anns:
            src = a.visible if prompt == "modal" and a.visible is not None else None
            box_of = a.segmentation if src is None or not rle_area(src) else src
            x, y, w, h = rle_xywh(box_of)
            boxes.append([x, y, x + w, y + h])
        predictor.set_image(ds.load_image(img.id))
        pred = predictor.predict(np.asarray(boxes, np.float32), amodal_boxes=prompt == "amodal")
        for out, masks in ((amodal, pred.masks), (visible, pred.visible_masks)):
            if masks is None:
                continue
            for j, a in enumerate(anns):
                out.append(
                    {
                        "image_id": img.id,
                        "category_id": a.category_id,
                        "score": float(pred.scores[j]),
                        "segmentation": rle_to_json(rle_from_mask(masks[j])),
                        "ann_id": a.id,
                    }
                )
    return amodal, (visible if visible else None)


def subset(ds: AmodalDataset, image_ids: set[int], target: str) -> AmodalDataset:
    """The ground truth of ``image_ids``; for a ``visible`` target the visible masks
    stand in as the segmentation (the metrics then score visible masks)."""
    anns = [a for a in ds.annotations if a.image_id in image_ids]
    if target == "visible":
        anns = [
            dataclasses.replace(a, segmentation=a.visible) for a in anns if a.visible is not None
        ]
    return AmodalDataset(
        images=[img for img in ds.images if img.id in image_ids],
        annotations=anns,
        categories=ds.categories,
        root=ds.root,
        info=ds.info,
    )


def _occluded_miou(per_bucket: dict[str, dict[str, Any]]) -> float | None:
    total = n = 0.0
    for key, _ in BUCKETS[1:]:
        b = per_bucket.get(key, {})
        if b.get("mIoU") is not None:
            total += b["mIoU"] * b["count"]
            n += b["count"]
    return total / n if n else None


def score(
    ds: AmodalDataset, results: list[dict[str, Any]], target: str = "amodal"
) -> dict[str, Any]:
    """The figures of the module docstring for ``results`` of :func:`coco_results`."""
    gt = subset(ds, {int(r["image_id"]) for r in results}, target)
    report = evaluate(gt, results, class_agnostic=True, baseline=target == "amodal")
    out: dict[str, Any] = {
        "mIoU": report.mIoU,
        "mIoU_occ": report.mIoU_occ,
        "AP": report.AP,
        "mIoU_occluded": _occluded_miou(report.per_bucket),
    }
    for key, _ in BUCKETS:
        out[f"mIoU[{key}]"] = report.per_bucket[key]["mIoU"]
        out[f"mIoU_occ[{key}]"] = report.per_bucket[key]["mIoU_occ"]
        out[f"count[{key}]"] = report.per_bucket[key]["count"]
    if report.baseline is not None:
        out["baseline_mIoU"] = report.baseline["mIoU"]
        out["baseline_mIoU_occluded"] = _occluded_miou(report.baseline["per_bucket"])
    by_id = {a.id: a for a in gt.annotations}
    ious, occ = [], []
    for r in results:
        ann = by_id[int(r["ann_id"])]
        rle = dict(r["segmentation"])
        rle["counts"] = rle["counts"].encode("ascii")
        ious.append(float(mask_utils.iou([rle], [ann.segmentation], [0])[0][0]))
        occ.append(ann.occlusion_rate)
    iou_arr, occ_arr = np.asarray(ious), np.asarray(occ)
    hidden = occ_arr > OCCLUDED
    out["inst_mIoU"] = float(iou_arr.mean()) if len(iou_arr) else None
    out["inst_mIoU_occluded"] = float(iou_arr[hidden].mean()) if hidden.any() else None
    out["inst_count_occluded"] = int(hidden.sum())
    whole = occ_arr < WHOLE
    out["inst_mIoU_unoccluded"] = float(iou_arr[whole].mean()) if whole.any() else None
    if target == "amodal":
        out["inst_baseline_mIoU_occluded"] = (
            float((1.0 - occ_arr[hidden]).mean()) if hidden.any() else None
        )
    return out


def validate(
    model: EfficientSam,
    ps: PreparedSet,
    ds: AmodalDataset,
    prompt: str,
    target: str,
    cache: EmbeddingCache | None = None,
    max_images: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    results = coco_results(ps, decode_images(model, ps, prompt, "mask", cache, max_images, device))
    return score(ds, results, target)


def prompted_instances(
    model_path: str | Path, data: Path, prompt: str, decoder: str, cache: Path
) -> Iterator[tuple[tuple[int, int], NDArray[np.float32], NDArray[np.float32], AmodalAnnotation]]:
    """Load a checkpoint and a COCO-amodal set (prepared under ``cache``) and yield, per
    instance prompted with its exact ``prompt`` box: the image's (H, W), the ``decoder``'s
    (3, L, L) logits and (3,) IoU, and the instance's annotation (for diagnostics scripts)."""
    model = load_model(model_path).eval()
    spec = DatasetSpec(data, name=data.parent.name)
    ps = prepare_dataset(spec, model.img_size, model.config.low_res_size, cache)
    by_id = {a.id: a for a in ps.load_source().annotations}
    for i, hw, logits, iou in decode_images(model, ps, prompt, decoder):
        first = int(ps.first[i])
        for j in range(len(logits)):
            yield hw, logits[j], iou[j], by_id[int(ps.ann_ids[first + j])]

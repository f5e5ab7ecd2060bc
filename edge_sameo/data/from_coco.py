"""Amodal-LVIS-style training data from any COCO instance dataset.

Stage 1 keeps the objects judged *complete* (not occluded, not cut by the image border):
for amodal input (visible masks present, e.g. the synthetic world) by ground truth,
``occlusion_rate <= max_occlusion``; for real, modal-only input by a model: an object is
complete when the model's amodal mask of its box agrees with its visible mask
(IoU >= ``complete_iou``), since a model that sees nothing to complete reproduces it.
Stage 2 pastes pairs of complete objects (target behind, occluder in front) with aspect
ratio kept and size normalised, placing the occluder relative to the target's box so that
the target's occlusion approaches a sampled ratio. Stage 3 writes dual annotations: every
composite comes with the same canvas showing the target alone (``dual_of``), so a model
also learns to leave unoccluded objects alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.data.coco_amodal import (
    AmodalDataset,
    annotation_record,
    load_amodal_coco,
    write_amodal_coco,
)
from edge_sameo.data.generate import write_png
from edge_sameo.data.synth import (
    Layout,
    Progress,
    Sprite,
    background,
    item_seed,
    make_rng,
    place_occluder,
    render,
)
from edge_sameo.errors import InputError
from edge_sameo.masks import mask_iou, mask_to_box

#: ``amodal_fn(image, boxes) -> masks``: image (H, W, 3) uint8 RGB, boxes (N, 4) float32
#: XYXY pixels, masks (N, H, W) bool amodal masks.
AmodalFn = Callable[[NDArray[np.uint8], NDArray[np.float32]], NDArray[np.bool_]]


@dataclass(frozen=True)
class FromCocoConfig:
    """Options of the three stages.

    size: (W, H) of the composites. count: composites to write (each also gets a dual).
    occlusion: (min, max) target occlusion ratio of the target. object_scale: (min, max)
    longer side of a pasted object as a fraction of min(W, H) (size normalisation).
    complete_iou: stage 1 threshold for real input (model amodal vs visible mask IoU).
    max_occlusion: stage 1 threshold for amodal input (ground-truth occlusion rate).
    min_area: smallest object (pixels) worth keeping. border: objects whose box comes
    within this many pixels of the image border are treated as truncated.
    background: ``"image"`` (a random source image, resized to cover the canvas) or
    ``"synth"`` (a synthetic textured background).
    """

    size: tuple[int, int] = (640, 480)
    count: int = 100
    occlusion: tuple[float, float] = (0.1, 0.7)
    object_scale: tuple[float, float] = (0.3, 0.55)
    complete_iou: float = 0.9
    max_occlusion: float = 0.0
    min_area: int = 64
    border: int = 1
    background: str = "image"

    def __post_init__(self) -> None:
        w, h = self.size
        if w < 32 or h < 32:
            raise InputError(f"size must be >= 32x32, got {self.size!r}")
        if self.count < 1:
            raise InputError(f"count must be >= 1, got {self.count}")
        lo, hi = self.occlusion
        if not 0.0 <= lo <= hi <= 0.95:
            raise InputError(f"occlusion must satisfy 0 <= min <= max <= 0.95: {self.occlusion}")
        slo, shi = self.object_scale
        if not 0.05 <= slo <= shi <= 0.9:
            raise InputError(f"object_scale must lie in [0.05, 0.9]: {self.object_scale}")
        if not 0.0 < self.complete_iou <= 1.0 or not 0.0 <= self.max_occlusion < 1.0:
            raise InputError("complete_iou must be in (0, 1] and max_occlusion in [0, 1)")
        if self.background not in {"image", "synth"}:
            raise InputError(f"background must be 'image' or 'synth', got {self.background!r}")


@dataclass(frozen=True, eq=False)
class CompleteObject:
    """A stage-1 object: pixels (h, w, 3) uint8 RGB and mask (h, w) bool cropped to its
    box, with where it came from."""

    image_id: int
    annotation_id: int
    category_id: int
    pixels: NDArray[np.uint8]
    mask: NDArray[np.bool_]


def _crop(
    image: NDArray[np.uint8], mask: NDArray[np.bool_]
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    x0, y0, x1, y1 = (int(v) for v in mask_to_box(mask))
    return image[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy()


def _touches_border(mask: NDArray[np.bool_], border: int) -> bool:
    x0, y0, x1, y1 = mask_to_box(mask)
    h, w = mask.shape
    return bool(x0 < border or y0 < border or x1 > w - border or y1 > h - border)


def select_complete(
    dataset: AmodalDataset, cfg: FromCocoConfig, amodal_fn: AmodalFn | None = None
) -> list[CompleteObject]:
    """Stage 1: the complete objects of ``dataset`` (see module docstring). Modal-only
    input needs ``amodal_fn``; amodal input is judged by its ground truth."""
    by_truth = dataset.has_visible
    if not by_truth and amodal_fn is None:
        raise InputError(
            "this dataset has no visible masks, so completeness must be judged by a model: "
            "pass a checkpoint (--checkpoint)"
        )
    out: list[CompleteObject] = []
    for img in dataset.images:
        anns = [a for a in dataset.annotations_of(img.id) if not a.iscrowd]
        if by_truth:
            anns = [a for a in anns if a.occlusion_rate <= cfg.max_occlusion + 1e-9]
        if not anns:
            continue
        masks = [a.visible_mask() if by_truth else a.amodal_mask() for a in anns]
        keep = [
            n
            for n, m in enumerate(masks)
            if int(m.sum()) >= cfg.min_area and not _touches_border(m, cfg.border)
        ]
        if not keep:
            continue
        image = dataset.load_image(img.id)
        if image.shape[:2] != (img.height, img.width):
            raise InputError(
                f"image {img.id} ({dataset.image_path(img.id)}) is {image.shape[1]}x"
                f"{image.shape[0]}, annotations say {img.width}x{img.height}"
            )
        if not by_truth:
            assert amodal_fn is not None
            boxes = np.stack([mask_to_box(masks[n]) for n in keep]).astype(np.float32)
            predicted = np.asarray(amodal_fn(image, boxes), dtype=bool)
            if predicted.shape != (len(keep), img.height, img.width):
                raise InputError(
                    f"amodal_fn returned masks of shape {predicted.shape}, expected "
                    f"{(len(keep), img.height, img.width)}"
                )
            keep = [
                n
                for n, p in zip(keep, predicted, strict=True)
                if mask_iou(p, masks[n]) >= cfg.complete_iou
            ]
        for n in keep:
            pixels, mask = _crop(image, masks[n])
            out.append(CompleteObject(img.id, anns[n].id, anns[n].category_id, pixels, mask))
    return out


def _normalised_sprite(obj: CompleteObject, longer: int) -> Sprite:
    """Resize an object, aspect ratio kept, so its longer side is ``longer`` pixels."""
    h, w = obj.mask.shape
    scale = longer / max(h, w)
    size = (max(round(w * scale), 1), max(round(h * scale), 1))
    pixels = cv2.resize(obj.pixels, size, interpolation=cv2.INTER_LINEAR)
    # Resampling the mask as grey levels and thresholding keeps edges smooth when enlarging.
    mask = cv2.resize(obj.mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_LINEAR)
    return Sprite(np.asarray(mask >= 128), np.asarray(pixels, np.uint8), obj.category_id)


def _cover(image: NDArray[np.uint8], w: int, h: int) -> NDArray[np.uint8]:
    """Resize to cover (w, h) with the aspect ratio kept, then centre-crop."""
    ih, iw = image.shape[:2]
    scale = max(w / iw, h / ih)
    rw, rh = max(math.ceil(iw * scale), w), max(math.ceil(ih * scale), h)
    big = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
    x0, y0 = (rw - w) // 2, (rh - h) // 2
    return np.ascontiguousarray(big[y0 : y0 + h, x0 : x0 + w])


def synthesize_pairs(
    dataset: AmodalDataset,
    objects: list[CompleteObject],
    out_dir: str | Path,
    seed: int,
    cfg: FromCocoConfig,
    progress: Progress = None,
) -> Path:
    """Stages 2 and 3: write ``cfg.count`` composites and their duals to ``out_dir``
    (``images/*.png`` and a native ``annotations.json``); returns the JSON path."""
    if len(objects) < 2:
        raise InputError(
            f"stage 1 kept {len(objects)} complete object(s); at least 2 are needed "
            "(lower --complete-iou or use a larger dataset)"
        )
    out = Path(out_dir)
    w, h = cfg.size
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    source_ids = [img.id for img in dataset.images]
    for i in range(cfg.count):
        rng = make_rng(item_seed(seed, i))
        a, b = (int(k) for k in rng.choice(len(objects), 2, replace=False))
        target, occluder = objects[a], objects[b]
        lo, hi = cfg.object_scale
        t_sprite = _normalised_sprite(target, round(rng.uniform(lo, hi) * min(w, h)))
        o_sprite = _normalised_sprite(occluder, round(rng.uniform(lo, hi) * min(w, h)))
        if cfg.background == "image":
            src = source_ids[int(rng.integers(len(source_ids)))]
            bg = _cover(dataset.load_image(src), w, h)
        else:
            bg = background(h, w, rng, int(rng.integers(3, 12)))
        th, tw = t_sprite.hw
        t_at = (int(rng.integers(0, max(w - tw, 0) + 1)), int(rng.integers(0, max(h - th, 0) + 1)))
        ratio = float(rng.uniform(*cfg.occlusion))
        o_at, _ = place_occluder(t_sprite.mask, t_at, o_sprite.mask, ratio, rng, (0, 0, w, h))
        layout = Layout(
            background=bg,
            sprites=(t_sprite, o_sprite),
            positions=(t_at, o_at),
            targets=(ratio, None),
            track_ids=(1, 2),
        )
        sources = {"source_annotations": [target.annotation_id, occluder.annotation_id]}
        composite_id = len(images) + 1
        for name, keep, extra in (
            (f"images/{i:06d}.png", None, sources),
            (f"images/{i:06d}_dual.png", [0], {"dual_of": composite_id, "dual_track_id": 1}),
        ):
            scene = render(layout, keep)
            image_id = len(images) + 1
            write_png(out / name, scene.image)
            images.append({"id": image_id, "file_name": name, "width": w, "height": h, **extra})
            for inst in scene.instances:
                fields: dict[str, Any] = {"depth": inst.depth}
                if inst.depth == 0 and keep is None:
                    fields["target_occlusion"] = round(ratio, 6)
                annotations.append(
                    annotation_record(
                        len(annotations) + 1,
                        image_id,
                        inst.category_id,
                        inst.amodal,
                        inst.visible,
                        track_id=inst.track_id,
                        **fields,
                    )
                )
        if progress is not None:
            progress(1)
    return write_amodal_coco(
        out / "annotations.json",
        images,
        annotations,
        dataset.categories,
        info={"generator": "edge_sameo.data.from_coco", "seed": seed, "count": cfg.count},
    )


def synthesize_from_coco(
    coco_json: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    cfg: FromCocoConfig | None = None,
    amodal_fn: AmodalFn | None = None,
    progress: Progress = None,
) -> Path:
    """All three stages on a COCO instance (or amodal) JSON whose ``file_name`` paths are
    relative to ``images_dir``; returns the path of the written ``annotations.json``."""
    cfg = cfg or FromCocoConfig()
    dataset = load_amodal_coco(coco_json, image_root=images_dir, require_visible=False)
    objects = select_complete(dataset, cfg, amodal_fn)
    return synthesize_pairs(dataset, objects, out_dir, seed, cfg, progress)

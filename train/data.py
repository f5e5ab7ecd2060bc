"""COCO-amodal sets resampled once for training, stored as memory-mapped arrays.

A training step must not decode PNGs and RLEs: each set is *prepared* once into a
folder of ``.npy`` files (opened with ``mmap_mode="r"``), keyed by the annotation file,
the model input size, the loss mask size and the preprocessing. Images without
annotations are left out (nothing to supervise).

Frames: ``pixels`` are the encoder-graph input of ``edge_sameo.preprocess.resize_pixels``
(the one preprocessing implementation) stored as float16; boxes are XYXY in the S×S
model-input frame (``boxes_to_model_frame``); masks are the fraction of each cell
covered, resampled to M×M over the whole image (the same squashed frame as the logits)
and stored as uint8 0..255.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from edge_sameo.data import AmodalDataset, load_amodal_coco
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_json
from edge_sameo.preprocess import boxes_to_model_frame, resize_pixels
from edge_sameo.train.cache import preprocess_fingerprint
from edge_sameo.train.config import DatasetSpec

PREP_VERSION = 1
META = "meta.json"
#: The arrays of a prepared set (one ``<name>.npy`` each; see ``PreparedSet``).
ARRAYS: tuple[str, ...] = (
    "image_ids", "image_hw", "first", "count", "dual", "pixels", "ann_ids", "category",
    "occlusion", "visible_area", "amodal_box", "visible_box", "amodal_mask", "visible_mask",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class PreparedSet:
    """A training view of one COCO-amodal set (I images with annotations, A instances).

    image_ids (I,) int64, image_hw (I, 2) int32 original (H, W), first / count (I,)
    int64: the instances of image i are ``first[i] : first[i] + count[i]``; dual (I,)
    bool: a dual image (``dual_of`` set); pixels (I, 3, S, S) float16 in [0, 1].
    ann_ids / category (A,) int64; occlusion (A,) float32; visible_area (A,) int64
    (original pixels); amodal_box / visible_box (A, 4) float32 XYXY in the S×S frame
    (visible all-zero when fully hidden); amodal_mask / visible_mask (A, M, M) uint8.
    """

    name: str
    directory: Path
    key: str
    source: Path
    img_size: int
    mask_size: int
    arrays: dict[str, NDArray[Any]]

    def __getattr__(self, name: str) -> NDArray[Any]:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def num_images(self) -> int:
        return len(self.arrays["image_ids"])

    @property
    def num_instances(self) -> int:
        return len(self.arrays["ann_ids"])

    def pixels_tensor(self, index: NDArray[np.int64] | list[int]) -> torch.Tensor:
        """(B, 3, S, S) float32 [0, 1] pixels of images ``index``."""
        idx = np.asarray(index, np.int64)
        return torch.from_numpy(np.asarray(self.arrays["pixels"][idx], np.float32))

    def load_source(self) -> AmodalDataset:
        return load_amodal_coco(self.source, require_visible=False)


def dataset_key(spec: DatasetSpec, img_size: int, mask_size: int) -> str:
    """Changes with the annotation file's bytes, the image list (names and sizes), the
    sizes and the preprocessing, so a stale preparation is never reused."""
    h = hashlib.sha256()
    try:
        h.update(spec.path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"dataset {spec.name}: {spec.path} not found") from None
    root = spec.image_root if spec.image_root is not None else spec.path.parent
    doc = json.loads(spec.path.read_text())
    for img in doc.get("images", []):
        p = root / str(img.get("file_name", ""))
        size = p.stat().st_size if p.is_file() else -1
        h.update(f"{img.get('file_name')}:{size};".encode())
    h.update(f"{PREP_VERSION}:{img_size}:{mask_size}:{preprocess_fingerprint()}".encode())
    return h.hexdigest()


def _open(directory: Path, meta: dict[str, Any], source: Path) -> PreparedSet:
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    return PreparedSet(
        name=str(meta["name"]),
        directory=directory,
        key=str(meta["key"]),
        source=source,
        img_size=int(meta["img_size"]),
        mask_size=int(meta["mask_size"]),
        arrays=arrays,
    )


def prepare_dataset(
    spec: DatasetSpec,
    img_size: int,
    mask_size: int,
    cache_dir: Path,
    progress: Callable[[int], object] | None = None,
) -> PreparedSet:
    """Open the prepared form of ``spec`` under ``cache_dir/data``, building it first
    when missing or stale. The folder appears complete or not at all (built beside it,
    then renamed), so a killed preparation is simply redone."""
    key = dataset_key(spec, img_size, mask_size)
    directory = Path(cache_dir) / "data" / f"{spec.name}-{key[:16]}"
    meta_path = directory / META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            return _open(directory, meta, spec.path)
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ds = load_amodal_coco(spec.path, image_root=spec.image_root, require_visible=False)
    if not ds.has_visible:
        raise InputError(
            f"dataset {spec.name}: annotations without visible masks; the recipe needs "
            "amodal and visible masks (edge-sameo's COCO-amodal format)"
        )
    meta = _build(ds, tmp, img_size, mask_size, progress)
    meta.update(name=spec.name, key=key, source=str(spec.path))
    atomic_write_json(tmp / META, meta)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return _open(directory, meta, spec.path)


def _box(mask: NDArray[np.bool_]) -> list[float]:
    """Tight XYXY pixel box of an (H, W) bool mask (zeros when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def coverage(mask: NDArray[np.bool_], size: int) -> NDArray[np.uint8]:
    """(H, W) bool -> (size, size) uint8: the fraction of each cell covered × 255."""
    return np.asarray(
        cv2.resize(mask.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_AREA),
        np.uint8,
    )


def _build(
    ds: AmodalDataset,
    out: Path,
    img_size: int,
    mask_size: int,
    progress: Callable[[int], object] | None,
) -> dict[str, Any]:
    images = [img for img in ds.images if ds.annotations_of(img.id)]
    anns = [a for img in images for a in ds.annotations_of(img.id)]
    n_img, n_ann = len(images), len(anns)
    if n_img == 0:
        raise InputError(f"{ds.root}: no image has annotations")

    def mm(name: str, dtype: Any, shape: tuple[int, ...]) -> np.memmap[Any, Any]:
        return np.lib.format.open_memmap(out / f"{name}.npy", "w+", dtype, shape)

    pixels = mm("pixels", np.float16, (n_img, 3, img_size, img_size))
    amodal_mask = mm("amodal_mask", np.uint8, (n_ann, mask_size, mask_size))
    visible_mask = mm("visible_mask", np.uint8, (n_ann, mask_size, mask_size))
    image_hw = np.zeros((n_img, 2), np.int32)
    first = np.zeros(n_img, np.int64)
    count = np.zeros(n_img, np.int64)
    amodal_box = np.zeros((n_ann, 4), np.float32)
    visible_box = np.zeros((n_ann, 4), np.float32)
    visible_area = np.zeros(n_ann, np.int64)
    a = 0
    for i, img in enumerate(images):
        rgb = ds.load_image(img.id)
        h, w = rgb.shape[:2]
        if (h, w) != (img.height, img.width):
            raise InputError(
                f"image {img.id}: file is {w}x{h}, annotations say {img.width}x{img.height}"
            )
        pixels[i] = resize_pixels(rgb, img_size)[0].astype(np.float16)
        image_hw[i] = (h, w)
        first[i] = a
        boxes = []
        for ann in ds.annotations_of(img.id):
            am, vm = ann.amodal_mask(), ann.visible_mask()
            amodal_mask[a] = coverage(am, mask_size)
            visible_mask[a] = coverage(vm, mask_size)
            visible_area[a] = int(np.count_nonzero(vm))
            boxes.append(_box(am) + _box(vm))
            a += 1
        count[i] = a - first[i]
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 2, 4)
        frame = boxes_to_model_frame(b.reshape(-1, 4), (h, w), img_size).reshape(-1, 2, 4)
        amodal_box[first[i] : a] = frame[:, 0].numpy()
        visible_box[first[i] : a] = frame[:, 1].numpy()
        if progress is not None:
            progress(1)
    pixels.flush()
    amodal_mask.flush()
    visible_mask.flush()
    small: dict[str, NDArray[Any]] = {
        "image_ids": np.array([img.id for img in images], np.int64),
        "image_hw": image_hw,
        "first": first,
        "count": count,
        "dual": np.array([img.dual_of is not None for img in images], bool),
        "ann_ids": np.array([x.id for x in anns], np.int64),
        "category": np.array([x.category_id for x in anns], np.int64),
        "occlusion": np.array([x.occlusion_rate for x in anns], np.float32),
        "visible_area": visible_area,
        "amodal_box": amodal_box,
        "visible_box": visible_box,
    }
    for name, arr in small.items():
        np.save(out / f"{name}.npy", arr)
    return {
        "version": PREP_VERSION,
        "img_size": img_size,
        "mask_size": mask_size,
        "num_images": n_img,
        "num_instances": n_ann,
        "skipped_images": len(ds.images) - n_img,
    }

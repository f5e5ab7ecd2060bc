"""The COCO-amodal annotation format: records, an atomic writer and tolerant loaders.

Native format (``info.format == "edge-sameo-amodal-coco/1"``), a COCO instances JSON where

* ``images[]``: ``id``, ``file_name`` (relative to the JSON's folder), ``width``, ``height``;
  video frames add ``video_id`` and ``frame_index`` (``file_name`` is then a frame image,
  or the video file itself with the frame read by index); a dual image (the same scene
  with the occluders of one instance removed) adds ``dual_of`` (the image id of the
  occluded scene) and ``dual_track_id`` (the instance shown unoccluded).
* ``annotations[]``: ``id``, ``image_id``, ``category_id``, ``iscrowd`` (0);
  ``segmentation``: the **amodal** mask as COCO RLE (``{"size": [H, W], "counts": str}``),
  ``bbox``: its box, XYWH pixels, ``area``: its pixel count; ``visible_segmentation`` /
  ``visible_bbox`` / ``visible_area``: the same for the **visible** mask (visible ⊆ amodal;
  ``visible_bbox`` is ``[0, 0, 0, 0]`` when fully occluded); ``occlusion_rate`` =
  1 - visible area / amodal area; optional ``track_id`` (video: stable per object).
* ``categories[]``: ``id``, ``name``, ``supercategory``; ``videos[]`` (optional): ``id``,
  ``file_name``, ``fps``, ``width``, ``height``, ``num_frames``.

The loaders also read the field names of the public amodal datasets, polygons or RLE:
COCOA-cls / D2SA (``segmentation`` amodal + ``inmodal_seg`` / ``inmodal_bbox``) and KINS
(``a_segm`` / ``a_bbox`` amodal + ``i_segm`` / ``i_bbox`` visible).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from pycocotools import mask as mask_utils

from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_json, read_image
from edge_sameo.masks import (
    RLE,
    check_rle_counts,
    decode_rle,
    rle_area,
    rle_from_mask,
    rle_intersection_area,
    rle_to_json,
    rle_xywh,
)
from edge_sameo.paths import require_file

FORMAT = "edge-sameo-amodal-coco/1"

#: (amodal segmentation, amodal bbox, visible segmentation, visible bbox) per source layout,
#: tried in this order.
LAYOUTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("native", "segmentation", "bbox", "visible_segmentation", "visible_bbox"),
    ("kins", "a_segm", "a_bbox", "i_segm", "i_bbox"),
    ("cocoa", "segmentation", "bbox", "inmodal_seg", "inmodal_bbox"),
)
_KNOWN_ANN_KEYS = {
    "id", "image_id", "category_id", "iscrowd", "area", "occlusion_rate", "track_id",
    "visible_area", "a_area", "i_area", "occlude_rate",
    *(k for layout in LAYOUTS for k in layout[1:]),
}  # fmt: skip
_KNOWN_IMG_KEYS = {"id", "file_name", "width", "height", "video_id", "frame_index", "dual_of"}


# --------------------------------------------------------------------------- masks as RLE


def to_rle(segm: Any, height: int, width: int, *, poly_tolerance: float = 1.0) -> RLE:
    """Any COCO segmentation (polygon list, compressed RLE with str/bytes counts, or
    uncompressed RLE) of an (height, width) image -> compressed RLE with bytes counts.

    Raises ``InputError`` (message without location, callers add it) for an RLE whose
    size is not the image's, a polygon vertex more than ``poly_tolerance`` pixels outside
    the image, or something that is not a segmentation.
    """
    if isinstance(segm, dict):
        size = segm.get("size")
        counts = segm.get("counts")
        if not (isinstance(size, Sequence) and len(size) == 2) or counts is None:
            raise InputError("RLE needs 'size' [H, W] and 'counts'")
        if [int(size[0]), int(size[1])] != [height, width]:
            raise InputError(
                f"mask size {list(size)} does not match the image size [{height}, {width}]"
            )
        if isinstance(counts, str):
            try:
                counts = counts.encode("ascii")
            except UnicodeEncodeError:
                raise InputError("RLE counts are not a valid COCO-compressed string") from None
        if not isinstance(counts, (bytes, list)):
            raise InputError("RLE counts must be a string or a list of integers")
        check_rle_counts(counts, height, width)
        if isinstance(counts, list):
            return dict(mask_utils.frPyObjects(segm, height, width))
        return {"size": [height, width], "counts": counts}
    if isinstance(segm, list) and segm:
        polys = [p for p in segm if isinstance(p, list)]
        if len(polys) != len(segm) or any(
            len(p) < 6 or len(p) % 2 for p in polys
        ):  # a polygon needs >= 3 (x, y) vertices
            raise InputError("polygons must be lists of >= 3 (x, y) pairs")
        pts = np.concatenate([np.asarray(p, np.float64) for p in polys]).reshape(-1, 2)
        if not np.isfinite(pts).all():
            raise InputError("polygon has NaN or infinite coordinates")
        if (
            pts[:, 0].min() < -poly_tolerance
            or pts[:, 1].min() < -poly_tolerance
            or pts[:, 0].max() > width + poly_tolerance
            or pts[:, 1].max() > height + poly_tolerance
        ):
            raise InputError(f"polygon lies outside the {width}x{height} image")
        rles = mask_utils.frPyObjects(polys, height, width)
        return dict(mask_utils.merge(rles))
    raise InputError("segmentation must be polygons or an RLE dict")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class AmodalImage:
    """One image (or video frame) of a dataset; ``extra`` keeps any other keys."""

    id: int
    file_name: str
    width: int
    height: int
    video_id: int | None = None
    frame_index: int | None = None
    dual_of: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_coco(self) -> dict[str, Any]:
        """The COCO ``images`` entry: id, file name, size, the video keys that are set and
        ``extra``."""
        out: dict[str, Any] = {
            "id": self.id,
            "file_name": self.file_name,
            "width": self.width,
            "height": self.height,
        }
        for key in ("video_id", "frame_index", "dual_of"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.extra)
        return out


@dataclass(frozen=True, eq=False)
class AmodalAnnotation:
    """One instance, normalised: masks as compressed RLE (bytes counts), boxes XYWH pixels.

    visible is None only for plain (modal-only) COCO files loaded with
    ``require_visible=False``; then ``segmentation`` is whatever the file holds.
    """

    id: int
    image_id: int
    category_id: int
    segmentation: RLE
    visible: RLE | None
    occlusion_rate: float
    track_id: int | None = None
    iscrowd: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def amodal_mask(self) -> NDArray[np.bool_]:
        """(H, W) bool amodal mask."""
        return decode_rle(self.segmentation)

    def visible_mask(self) -> NDArray[np.bool_]:
        """(H, W) bool visible mask (raises ``InputError`` when the file had none)."""
        if self.visible is None:
            raise InputError(f"annotation {self.id} has no visible mask")
        return decode_rle(self.visible)

    @property
    def area(self) -> int:
        """Amodal mask area in pixels."""
        return rle_area(self.segmentation)

    @property
    def bbox(self) -> list[float]:
        """Amodal box, XYWH pixels."""
        return rle_xywh(self.segmentation)

    def to_coco(self) -> dict[str, Any]:
        """The COCO-amodal ``annotations`` entry: amodal RLE, box (XYWH pixels) and area,
        the visible ones and the occlusion rate when present, track id and ``extra``."""
        out: dict[str, Any] = {
            "id": self.id,
            "image_id": self.image_id,
            "category_id": self.category_id,
            "iscrowd": self.iscrowd,
            "segmentation": rle_to_json(self.segmentation),
            "bbox": self.bbox,
            "area": self.area,
        }
        if self.visible is not None:
            out["visible_segmentation"] = rle_to_json(self.visible)
            out["visible_bbox"] = rle_xywh(self.visible)
            out["visible_area"] = rle_area(self.visible)
            out["occlusion_rate"] = self.occlusion_rate
        if self.track_id is not None:
            out["track_id"] = self.track_id
        out.update(self.extra)
        return out


def annotation_record(
    ann_id: int,
    image_id: int,
    category_id: int,
    amodal: NDArray[np.bool_],
    visible: NDArray[np.bool_],
    track_id: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A native annotation dict from (H, W) bool amodal and visible masks."""
    amodal_rle, visible_rle = rle_from_mask(amodal), rle_from_mask(visible)
    area = rle_area(amodal_rle)
    vis_area = rle_area(visible_rle)
    out: dict[str, Any] = {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "iscrowd": 0,
        "segmentation": rle_to_json(amodal_rle),
        "bbox": rle_xywh(amodal_rle),
        "area": area,
        "visible_segmentation": rle_to_json(visible_rle),
        "visible_bbox": rle_xywh(visible_rle),
        "visible_area": vis_area,
        "occlusion_rate": 0.0 if area == 0 else round(1.0 - vis_area / area, 6),
    }
    if track_id is not None:
        out["track_id"] = int(track_id)
    out.update(extra)
    return out


def coco_document(
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any] | None = None,
    videos: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The native top-level dict (``info.format`` set to ``FORMAT``)."""
    doc: dict[str, Any] = {
        "info": {**(info or {}), "format": FORMAT},
        "images": list(images),
        "annotations": list(annotations),
        "categories": list(categories),
    }
    if videos:
        doc["videos"] = list(videos)
    return doc


def write_amodal_coco(
    path: str | Path,
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any] | None = None,
    videos: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write a native COCO-amodal JSON atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    atomic_write_json(path, coco_document(images, annotations, categories, info, videos))
    return path


# --------------------------------------------------------------------------- dataset


@dataclass
class AmodalDataset:
    """A normalised in-memory amodal dataset, whatever layout the file used.

    root: the folder ``file_name`` paths are relative to (the JSON's folder by default).
    layout: ``"native"``, ``"kins"``, ``"cocoa"`` or ``"modal"`` (plain COCO, no visible).
    """

    images: list[AmodalImage]
    annotations: list[AmodalAnnotation]
    categories: list[dict[str, Any]]
    root: Path | None = None
    videos: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    layout: str = "native"
    _by_image: dict[int, list[AmodalAnnotation]] = field(init=False, repr=False)
    _images: dict[int, AmodalImage] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._images = {img.id: img for img in self.images}
        self._by_image = {img.id: [] for img in self.images}
        for ann in self.annotations:
            self._by_image.setdefault(ann.image_id, []).append(ann)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_visible(self) -> bool:
        """True when every annotation has a visible mask."""
        return all(a.visible is not None for a in self.annotations)

    def image(self, image_id: int) -> AmodalImage:
        """The image with id ``image_id`` (``InputError`` when there is none)."""
        try:
            return self._images[image_id]
        except KeyError:
            raise InputError(f"no image with id {image_id}") from None

    def annotations_of(self, image_id: int) -> list[AmodalAnnotation]:
        """The annotations of image ``image_id`` (empty when it has none)."""
        return self._by_image.get(image_id, [])

    def image_path(self, image_id: int) -> Path:
        """The image's file: ``file_name``, relative to ``root`` unless absolute."""
        img = self.image(image_id)
        p = Path(img.file_name)
        return p if p.is_absolute() or self.root is None else self.root / p

    def load_image(self, image_id: int) -> NDArray[np.uint8]:
        """(H, W, 3) uint8 RGB pixels of an image; a video frame whose ``file_name`` is
        the video itself is read by its ``frame_index``."""
        img = self.image(image_id)
        path = self.image_path(image_id)
        if img.frame_index is not None and path.suffix.lower() in {".mp4", ".avi", ".mkv"}:
            cap = cv2.VideoCapture(str(path))
            try:
                cap.set(cv2.CAP_PROP_POS_FRAMES, img.frame_index)
                ok, frame = cap.read()
            finally:
                cap.release()
            if not ok:
                raise InputError(f"cannot read frame {img.frame_index} of {path}")
            return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        return read_image(path)

    def to_coco(self) -> dict[str, Any]:
        """The native COCO-amodal dict of this dataset."""
        return coco_document(
            [i.to_coco() for i in self.images],
            [a.to_coco() for a in self.annotations],
            self.categories,
            self.info,
            self.videos,
        )


def load_amodal_coco(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    tolerance: float = 0.02,
    require_visible: bool = True,
) -> AmodalDataset:
    """Read and validate an amodal COCO JSON (native, COCOA-cls/D2SA or KINS layout).

    tolerance: the largest accepted fraction of a visible mask lying outside its amodal
    mask (polygon rasterisation rarely agrees to the pixel). With ``require_visible=False``
    plain COCO instance files load too (``visible`` None, layout ``"modal"``).
    Raises ``InputError`` naming the file, the annotation id and the problem.
    """
    path = require_file(path, "annotation file")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})") from None
    return parse_amodal_coco(
        doc,
        source=str(path),
        root=Path(image_root) if image_root is not None else path.parent,
        tolerance=tolerance,
        require_visible=require_visible,
    )


def _int_field(rec: Mapping[str, Any], key: str, where: str) -> int:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{where}: missing or non-integer '{key}'")
    return int(value)


def parse_amodal_coco(
    doc: Any,
    *,
    source: str = "<dict>",
    root: Path | None = None,
    tolerance: float = 0.02,
    require_visible: bool = True,
) -> AmodalDataset:
    """Validate and normalise an already-parsed COCO-amodal dict (see ``load_amodal_coco``)."""
    if not isinstance(doc, dict):
        raise InputError(f"{source}: top level must be a JSON object")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            raise InputError(f"{source}: missing list '{key}'")
    categories = doc.get("categories") or []
    if not isinstance(categories, list):
        raise InputError(f"{source}: 'categories' must be a list")
    cat_ids = set()
    for n, cat in enumerate(categories):
        cat_ids.add(_int_field(cat, "id", f"{source}: category #{n}"))

    images: list[AmodalImage] = []
    by_id: dict[int, AmodalImage] = {}
    for n, rec in enumerate(doc["images"]):
        where = f"{source}: image #{n}"
        if not isinstance(rec, dict):
            raise InputError(f"{where}: not an object")
        img_id = _int_field(rec, "id", where)
        where = f"{source}: image {img_id}"
        width, height = _int_field(rec, "width", where), _int_field(rec, "height", where)
        if width <= 0 or height <= 0:
            raise InputError(f"{where}: width and height must be positive")
        if img_id in by_id:
            raise InputError(f"{where}: duplicate image id")
        img = AmodalImage(
            id=img_id,
            file_name=str(rec.get("file_name", "")),
            width=width,
            height=height,
            video_id=rec.get("video_id"),
            frame_index=rec.get("frame_index"),
            dual_of=rec.get("dual_of"),
            extra={k: v for k, v in rec.items() if k not in _KNOWN_IMG_KEYS},
        )
        images.append(img)
        by_id[img_id] = img

    annotations: list[AmodalAnnotation] = []
    layouts: set[str] = set()
    seen: set[int] = set()
    for n, rec in enumerate(doc["annotations"]):
        if not isinstance(rec, dict):
            raise InputError(f"{source}: annotation #{n}: not an object")
        ann_id = _int_field(rec, "id", f"{source}: annotation #{n}")
        where = f"{source}: annotation {ann_id}"
        if ann_id in seen:
            raise InputError(f"{where}: duplicate annotation id")
        seen.add(ann_id)
        ann, layout = _parse_annotation(rec, ann_id, where, by_id, cat_ids, tolerance)
        if ann.visible is None and require_visible:
            raise InputError(
                f"{where}: no visible mask (expected 'visible_segmentation', "
                "'inmodal_seg' or 'i_segm')"
            )
        layouts.add(layout)
        annotations.append(ann)
    layout = layouts.pop() if len(layouts) == 1 else ("mixed" if layouts else "native")
    return AmodalDataset(
        images=images,
        annotations=annotations,
        categories=[dict(c) for c in categories],
        root=root,
        videos=list(doc.get("videos") or []),
        info=dict(doc.get("info") or {}),
        layout=layout,
    )


def _parse_annotation(
    rec: Mapping[str, Any],
    ann_id: int,
    where: str,
    images: Mapping[int, AmodalImage],
    cat_ids: set[int],
    tolerance: float,
) -> tuple[AmodalAnnotation, str]:
    image_id = _int_field(rec, "image_id", where)
    if image_id not in images:
        raise InputError(f"{where}: image_id {image_id} is not in 'images'")
    category_id = _int_field(rec, "category_id", where)
    if cat_ids and category_id not in cat_ids:
        raise InputError(f"{where}: category_id {category_id} is not in 'categories'")
    img = images[image_id]
    found = next((lay for lay in LAYOUTS if lay[1] in rec and lay[3] in rec), None)
    if found is not None:
        layout, amodal_key, _, visible_key, _ = found
    else:
        layout, amodal_key, visible_key = "modal", "segmentation", ""
        if "a_segm" in rec:
            amodal_key = "a_segm"
        if amodal_key not in rec:
            raise InputError(f"{where}: missing amodal 'segmentation' (or 'a_segm')")
    try:
        amodal = to_rle(rec[amodal_key], img.height, img.width)
    except InputError as exc:
        raise InputError(f"{where}: '{amodal_key}': {exc}") from None
    area = rle_area(amodal)
    if area == 0:
        raise InputError(f"{where}: empty amodal mask")
    visible = None
    occlusion = 0.0
    if visible_key:
        try:
            visible = to_rle(rec[visible_key], img.height, img.width)
        except InputError as exc:
            raise InputError(f"{where}: '{visible_key}': {exc}") from None
        vis_area = rle_area(visible)
        inside = rle_intersection_area(visible, amodal)
        if vis_area - inside > tolerance * max(vis_area, 1):
            raise InputError(
                f"{where}: visible mask is not inside the amodal mask "
                f"({(vis_area - inside) / vis_area:.1%} outside, tolerance {tolerance:.1%})"
            )
        occlusion = round(1.0 - inside / area, 6)
    track = rec.get("track_id")
    extra = {k: v for k, v in rec.items() if k not in _KNOWN_ANN_KEYS}
    return (
        AmodalAnnotation(
            id=ann_id,
            image_id=image_id,
            category_id=category_id,
            segmentation=amodal,
            visible=visible,
            occlusion_rate=occlusion,
            track_id=int(track) if track is not None else None,
            iscrowd=int(rec.get("iscrowd", 0) or 0),
            extra=extra,
        ),
        layout,
    )


def iter_instances(
    dataset: AmodalDataset, image_ids: Iterable[int] | None = None
) -> Iterable[tuple[AmodalImage, list[AmodalAnnotation]]]:
    """(image, annotations) pairs in dataset order (or for ``image_ids``)."""
    ids = [i.id for i in dataset.images] if image_ids is None else list(image_ids)
    for image_id in ids:
        yield dataset.image(image_id), dataset.annotations_of(image_id)

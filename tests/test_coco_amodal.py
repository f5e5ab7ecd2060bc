"""COCO-amodal format: writer round trip, public dataset layouts, rejection of bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sameo.data import annotation_record, load_amodal_coco, write_amodal_coco
from edge_sameo.data.coco_amodal import FORMAT, parse_amodal_coco
from edge_sameo.errors import InputError
from edge_sameo.masks import encode_rle, rle_from_mask, rle_to_json

H, W = 20, 30


def _masks() -> tuple[np.ndarray, np.ndarray]:
    amodal = np.zeros((H, W), bool)
    amodal[4:14, 5:25] = True  # 10 x 20 = 200 px
    visible = amodal.copy()
    visible[:, 15:] = False  # left half visible: 100 px
    return amodal, visible


def _doc(ann: dict[str, Any]) -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "annotations": [ann],
        "categories": [{"id": 3, "name": "thing"}],
    }


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    return path


def test_native_round_trip(tmp_path: Path) -> None:
    amodal, visible = _masks()
    ann = annotation_record(7, 1, 3, amodal, visible, track_id=4, note="kept")
    assert ann["occlusion_rate"] == pytest.approx(0.5)
    assert ann["bbox"] == [5.0, 4.0, 20.0, 10.0] and ann["visible_bbox"] == [5.0, 4.0, 10.0, 10.0]
    path = write_amodal_coco(
        tmp_path / "sub" / "ann.json",
        [{"id": 1, "file_name": "a.png", "width": W, "height": H, "video_id": 2,
          "frame_index": 0}],
        [ann],
        [{"id": 3, "name": "thing"}],
    )  # fmt: skip
    assert not list(path.parent.glob("*.tmp"))  # atomic: no temporary left behind
    assert json.loads(path.read_text())["info"]["format"] == FORMAT
    ds = load_amodal_coco(path)
    assert ds.layout == "native" and ds.root == path.parent
    (a,) = ds.annotations
    np.testing.assert_array_equal(a.amodal_mask(), amodal)
    np.testing.assert_array_equal(a.visible_mask(), visible)
    assert (a.id, a.image_id, a.category_id, a.track_id) == (7, 1, 3, 4)
    assert a.occlusion_rate == pytest.approx(0.5) and a.extra["note"] == "kept"
    assert ds.images[0].video_id == 2 and ds.images[0].frame_index == 0
    assert ds.to_coco()["annotations"][0] == ann


def _poly(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_cocoa_layout_polygons_and_rle(tmp_path: Path) -> None:
    amodal, visible = _masks()
    rec = {
        "id": 1, "image_id": 1, "category_id": 3, "occlude_rate": 0.5,
        "segmentation": _poly(5, 4, 25, 14), "bbox": [5, 4, 20, 10],
        "inmodal_seg": encode_rle(visible), "inmodal_bbox": [5, 4, 10, 10],
    }  # fmt: skip
    ds = load_amodal_coco(_write(tmp_path, _doc(rec)))
    assert ds.layout == "cocoa"
    (a,) = ds.annotations
    # A polygon's rasterisation covers its boundary pixels differently; compare by IoU.
    got = a.amodal_mask()
    assert (got & amodal).sum() / (got | amodal).sum() > 0.9
    np.testing.assert_array_equal(a.visible_mask(), visible)
    assert 0.4 < a.occlusion_rate < 0.6


def test_kins_layout(tmp_path: Path) -> None:
    rec = {
        "id": 5, "image_id": 1, "category_id": 3,
        "a_segm": _poly(5, 4, 25, 14), "a_bbox": [5, 4, 20, 10],
        "i_segm": _poly(5, 4, 15, 14), "i_bbox": [5, 4, 10, 10], "a_area": 200, "i_area": 100,
    }  # fmt: skip
    ds = load_amodal_coco(_write(tmp_path, _doc(rec)))
    assert ds.layout == "kins" and ds.has_visible
    assert 0.4 < ds.annotations[0].occlusion_rate < 0.6
    assert ds.to_coco()["annotations"][0]["visible_bbox"][2] < 12


def test_uncompressed_rle_is_read() -> None:
    amodal, visible = _masks()
    # Column-major run lengths, starting with zeros.
    flat = amodal.flatten(order="F").astype(int)
    counts, run, cur = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            run, cur = 0, v
        run += 1
    counts.append(run)
    rec = {"id": 1, "image_id": 1, "category_id": 3,
           "segmentation": {"size": [H, W], "counts": counts},
           "visible_segmentation": rle_to_json(rle_from_mask(visible))}  # fmt: skip
    ds = parse_amodal_coco(_doc(rec))
    np.testing.assert_array_equal(ds.annotations[0].amodal_mask(), amodal)


def test_plain_coco_loads_only_when_visible_is_optional(tmp_path: Path) -> None:
    amodal, _ = _masks()
    rec = {"id": 1, "image_id": 1, "category_id": 3, "segmentation": encode_rle(amodal)}
    path = _write(tmp_path, _doc(rec))
    with pytest.raises(InputError, match="annotation 1: no visible mask"):
        load_amodal_coco(path)
    ds = load_amodal_coco(path, require_visible=False)
    assert ds.layout == "modal" and not ds.has_visible
    with pytest.raises(InputError):
        ds.annotations[0].visible_mask()


def test_tolerance_accepts_small_disagreement() -> None:
    amodal, visible = _masks()
    visible[4, 4] = True  # 1 of 101 visible pixels lies outside the amodal mask
    rec = annotation_record(1, 1, 3, amodal, visible)
    parse_amodal_coco(_doc(rec), tolerance=0.02)
    with pytest.raises(InputError, match="not inside the amodal mask"):
        parse_amodal_coco(_doc(rec), tolerance=0.001)


def _good() -> dict[str, Any]:
    amodal, visible = _masks()
    return annotation_record(9, 1, 3, amodal, visible)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda a: a.pop("category_id"), "missing or non-integer 'category_id'"),
        (lambda a: a.update(image_id=42), "image_id 42 is not in 'images'"),
        (lambda a: a.update(category_id=8), "category_id 8 is not in 'categories'"),
        (lambda a: a.pop("segmentation"), "missing amodal 'segmentation'"),
        (lambda a: a.update(segmentation=_poly(5, 4, 45, 14)), "outside the 30x20 image"),
        (
            lambda a: a.update(segmentation={"size": [10, 10], "counts": "PP0"}),
            "does not match the image size",
        ),
        (
            lambda a: a.update(visible_segmentation=encode_rle(~_masks()[0])),
            "visible mask is not inside the amodal mask",
        ),
        (
            lambda a: a.update(segmentation=encode_rle(np.zeros((H, W), bool))),
            "empty amodal mask",
        ),
        (lambda a: a.update(segmentation=[[1, 2, 3]]), "polygons must be lists"),
        (lambda a: a.update(segmentation="nope"), "must be polygons or an RLE"),
    ],
)
def test_malformed_annotations_name_file_id_and_problem(
    tmp_path: Path, mutate: Any, problem: str
) -> None:
    ann = _good()
    mutate(ann)
    path = _write(tmp_path, _doc(ann))
    with pytest.raises(InputError) as err:
        load_amodal_coco(path)
    message = str(err.value)
    assert str(path) in message and "annotation 9" in message and problem in message


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"images": []}, "missing list 'annotations'"),
        ({"images": [{"id": 1, "width": 0, "height": 5}], "annotations": []}, "positive"),
        ([1, 2], "top level must be a JSON object"),
    ],
)
def test_malformed_documents(tmp_path: Path, doc: Any, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        load_amodal_coco(_write(tmp_path, doc))


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_amodal_coco(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(InputError, match="not a JSON file"):
        load_amodal_coco(bad)


def test_rle_encoding_equals_pycocotools() -> None:
    """Our run counting over the occupied columns gives pycocotools' bytes exactly: empty,
    full, edge columns, corners and random masks of every density."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool), np.zeros((1, 1), bool)]
    corner = np.zeros((48, 64), bool)
    corner[:, 0] = corner[47, 63] = True
    cases.append(corner)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        m = rng.random((h, w)) < rng.random()
        if rng.random() < 0.5:  # empty columns on the left and on the right
            m[:, : int(rng.integers(0, w + 1))] = False
        if rng.random() < 0.5:
            m[:, int(rng.integers(0, w + 1)) :] = False
        cases.append(m)
    for m in cases:
        ours = rle_from_mask(m)
        theirs = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours["counts"] == theirs["counts"] and list(ours["size"]) == list(theirs["size"])

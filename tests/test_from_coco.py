"""Amodal-LVIS-style synthesis from a COCO instance dataset the tests generate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sameo.data import (
    AmodalDataset,
    FromCocoConfig,
    SynthConfig,
    generate_dataset,
    load_amodal_coco,
    select_complete,
    synthesize_from_coco,
)
from edge_sameo.errors import InputError
from edge_sameo.masks import mask_to_box

CFG = FromCocoConfig(size=(128, 96), count=4, occlusion=(0.3, 0.5), background="image")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic amodal dataset: the ground truth says which objects are whole."""
    out = tmp_path_factory.mktemp("src")
    cfg = SynthConfig(size=(160, 120), objects=(2, 3), object_scale=(0.2, 0.35), dual=0)
    return generate_dataset(out, 6, seed=1, cfg=cfg)


def _modal_only(path: Path, out: Path) -> Path:
    """The same dataset as a plain COCO instance file: segmentation = the visible mask."""
    doc = json.loads(path.read_text())
    for ann in doc["annotations"]:
        ann["segmentation"] = ann.pop("visible_segmentation")
        ann["bbox"] = ann.pop("visible_bbox")
        for key in ("visible_area", "occlusion_rate", "target_occlusion", "depth", "track_id"):
            ann.pop(key, None)
    doc.pop("info")
    target = out / "modal.json"
    target.write_text(json.dumps(doc))
    return target


def _oracle(dataset: AmodalDataset) -> Any:
    """An ``amodal_fn`` answering with the true amodal mask of the object in each box."""

    def amodal_fn(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = []
        for box in boxes:
            best = max(
                dataset.annotations,
                key=lambda a: -np.abs(mask_to_box(a.visible_mask()) - box).sum(),
            )
            out.append(best.amodal_mask())
        return np.stack(out)

    return amodal_fn


def test_stage1_by_ground_truth_keeps_only_whole_objects(source: Path) -> None:
    ds = load_amodal_coco(source)
    objects = select_complete(ds, CFG)
    assert objects
    anns = {a.id: a for a in ds.annotations}
    for obj in objects:
        ann = anns[obj.annotation_id]
        assert ann.occlusion_rate == 0.0
        assert obj.pixels.shape[:2] == obj.mask.shape and obj.mask.any()
        np.testing.assert_array_equal(obj.mask.sum(), ann.visible_mask().sum())
    assert len(objects) < len(ds.annotations)  # some were occluded


def test_stage1_by_model_on_modal_only_input(source: Path, tmp_path: Path) -> None:
    modal = load_amodal_coco(_modal_only(source, tmp_path), image_root=source.parent,
                             require_visible=False)  # fmt: skip
    assert not modal.has_visible
    with pytest.raises(InputError, match="checkpoint"):
        select_complete(modal, CFG)
    truth = load_amodal_coco(source)
    by_model = select_complete(modal, CFG, _oracle(truth))
    by_truth = select_complete(truth, CFG)
    # An exact amodal model agrees with the ground truth on which objects are whole.
    assert {o.annotation_id for o in by_model} == {o.annotation_id for o in by_truth}
    # A model that always completes objects larger than they are finds none complete.
    grow = lambda image, boxes: np.ones((len(boxes), *image.shape[:2]), bool)  # noqa: E731
    assert select_complete(modal, CFG, grow) == []


def test_pairs_and_dual_annotations(source: Path, tmp_path: Path) -> None:
    path = synthesize_from_coco(source, source.parent, tmp_path / "out", seed=3, cfg=CFG)
    ds = load_amodal_coco(path)
    composites = [img for img in ds.images if img.dual_of is None]
    duals = [img for img in ds.images if img.dual_of is not None]
    assert len(composites) == len(duals) == CFG.count
    achieved = []
    for img in composites:
        target, occluder = ds.annotations_of(img.id)
        assert occluder.occlusion_rate == 0.0
        achieved.append(target.occlusion_rate)
        assert ds.load_image(img.id).shape == (96, 128, 3)
        # Size normalisation: the longer side of each object is within the configured range.
        for ann in (target, occluder):
            _, _, w, h = ann.bbox
            assert 0.3 * 96 - 2 <= max(w, h) <= 0.55 * 96 + 2
    assert np.median(achieved) == pytest.approx(0.4, abs=0.12)
    for dual in duals:
        (alone,) = ds.annotations_of(dual.id)
        target = ds.annotations_of(dual.dual_of or 0)[0]
        assert alone.occlusion_rate == 0.0
        np.testing.assert_array_equal(alone.amodal_mask(), target.amodal_mask())
    categories = {c["id"] for c in load_amodal_coco(source).categories}
    assert {a.category_id for a in ds.annotations} <= categories


def test_synthesis_is_reproducible(source: Path, tmp_path: Path) -> None:
    cfg = FromCocoConfig(size=(96, 64), count=2, background="synth")
    a = synthesize_from_coco(source, source.parent, tmp_path / "a", seed=5, cfg=cfg)
    b = synthesize_from_coco(source, source.parent, tmp_path / "b", seed=5, cfg=cfg)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a/images/000001.png").read_bytes() == (
        tmp_path / "b/images/000001.png"
    ).read_bytes()


def test_too_few_complete_objects(source: Path, tmp_path: Path) -> None:
    cfg = FromCocoConfig(size=(96, 64), count=1, min_area=10**6)
    with pytest.raises(InputError, match="at least 2 are needed"):
        synthesize_from_coco(source, source.parent, tmp_path, cfg=cfg)


@pytest.mark.parametrize(
    "kwargs", [{"count": 0}, {"occlusion": (0.6, 0.2)}, {"background": "sky"},
               {"complete_iou": 0.0}, {"object_scale": (0.01, 0.5)}]
)  # fmt: skip
def test_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        FromCocoConfig(**kwargs)


def test_cli_from_coco(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_sameo.commands import synth

    parser = argparse.ArgumentParser()
    synth.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    args = parser.parse_args(
        ["synth", "from-coco", "--coco", str(source), "--images", str(source.parent),
         "--out", str(out), "--count", "2", "--size", "96x64", "--quiet"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert len(load_amodal_coco(out / "annotations.json").images) == 4
    assert "stage 1:" in capsys.readouterr().out
    modal = _modal_only(source, tmp_path)
    args = parser.parse_args(
        ["synth", "from-coco", "--coco", str(modal), "--images", str(source.parent),
         "--out", str(tmp_path / "o2"), "--quiet"]
    )  # fmt: skip
    with pytest.raises(InputError, match="--checkpoint"):
        args.func(args)


def test_checkpoint_amodal_fn_feeds_stage1(
    source: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    from edge_sameo.commands.synth import model_amodal_fn

    amodal_fn = model_amodal_fn(tiny_checkpoint)
    modal = load_amodal_coco(_modal_only(source, tmp_path), image_root=source.parent,
                             require_visible=False)  # fmt: skip
    image = modal.load_image(1)
    boxes = np.array([[10, 10, 60, 50], [30, 20, 90, 80]], np.float32)
    masks = amodal_fn(image, boxes)
    assert masks.shape == (2, *image.shape[:2]) and masks.dtype == bool
    calls: list[int] = []

    def counted(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        calls.append(len(boxes))
        return amodal_fn(image, boxes)

    kept = select_complete(modal, FromCocoConfig(complete_iou=0.99, size=(96, 64)), counted)
    # One model call per image with candidate objects, every candidate judged.
    assert len(calls) == len(modal.images) and sum(calls) >= len(kept)
    assert all(o.mask.any() for o in kept)

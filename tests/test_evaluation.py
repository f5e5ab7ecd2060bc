"""Amodal evaluation: perfect and baseline predictions, hand-computed IoUs, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sameo.data import SynthConfig, annotation_record, generate_dataset, write_amodal_coco
from edge_sameo.data.coco_amodal import AmodalDataset, load_amodal_coco
from edge_sameo.errors import InputError
from edge_sameo.evaluation import bucket_of, evaluate, occluded_iou
from edge_sameo.masks import encode_rle, rle_to_json

KEYS = {"AP", "AP50", "AP75", "AR", "mIoU", "mIoU_occ", "per_bucket", "baseline"}


@pytest.fixture(scope="module")
def synth_gt(tmp_path_factory: pytest.TempPathFactory) -> AmodalDataset:
    out = tmp_path_factory.mktemp("gt")
    cfg = SynthConfig(size=(128, 96), objects=(3, 4), occlusion=(0.1, 0.7), dual=0)
    return load_amodal_coco(generate_dataset(out, 6, seed=0, cfg=cfg))


def _preds(gt: AmodalDataset, field: str = "segmentation") -> list[dict[str, Any]]:
    """COCO results from the ground truth's amodal (``segmentation``) or ``visible`` masks."""
    return [
        {
            "image_id": a.image_id,
            "category_id": a.category_id,
            "score": 0.9,
            "segmentation": rle_to_json(getattr(a, field)),
        }
        for a in gt.annotations
    ]


def test_ground_truth_as_prediction_is_perfect(synth_gt: AmodalDataset) -> None:
    report = evaluate(synth_gt, _preds(synth_gt))
    assert report.AP == pytest.approx(1.0) and report.AP50 == pytest.approx(1.0)
    assert report.AP75 == pytest.approx(1.0) and report.AR == pytest.approx(1.0)
    assert report.mIoU == pytest.approx(1.0) and report.mIoU_occ == pytest.approx(1.0)
    assert report.matched == report.num_gt == len(synth_gt.annotations)
    assert report.unmatched_gt == 0
    assert set(report.to_dict()) >= KEYS
    # The baseline is the visible mask: worse wherever something is hidden.
    assert report.baseline is not None and report.baseline["mIoU"] < 1.0
    assert report.baseline["mIoU_occ"] == 0.0


def test_visible_as_amodal_recovers_nothing_hidden(synth_gt: AmodalDataset) -> None:
    report = evaluate(synth_gt, _preds(synth_gt, "visible"))
    assert report.mIoU_occ == 0.0
    assert report.mIoU is not None and report.mIoU < 1.0
    assert report.AP is not None and report.AP < 1.0
    for bucket in report.per_bucket.values():
        if bucket["count_occ"]:
            assert bucket["mIoU_occ"] == 0.0
    # The baseline is this very prediction, scored by the same rules.
    assert report.baseline is not None
    for key in ("AP", "AP50", "AP75", "AR", "mIoU", "mIoU_occ"):
        assert report.baseline[key] == pytest.approx(report.to_dict()[key]), key
    assert report.baseline["per_bucket"] == report.per_bucket
    assert report.baseline["unmatched_gt"] == report.unmatched_gt


def _tiny(tmp_path: Path) -> Path:
    a_amodal = np.zeros((10, 10), bool)
    a_amodal[0:4, 0:4] = True  # 16 px
    a_visible = a_amodal.copy()
    a_visible[:, 2:] = False  # 8 px visible, occluded region = columns 2-3 (8 px)
    b = np.zeros((10, 10), bool)
    b[6:10, 6:10] = True  # 16 px, unoccluded
    return write_amodal_coco(
        tmp_path / "gt.json",
        [{"id": 1, "file_name": "x.png", "width": 10, "height": 10}],
        [annotation_record(1, 1, 1, a_amodal, a_visible), annotation_record(2, 1, 2, b, b)],
        [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    )


def _box(y0: int, y1: int, x0: int, x1: int) -> dict[str, Any]:
    m = np.zeros((10, 10), bool)
    m[y0:y1, x0:x1] = True
    return encode_rle(m)


def test_hand_computed_ious(tmp_path: Path) -> None:
    preds = [
        # 12 px inside A's 16: IoU 12/16; covers column 2 of the hidden columns 2-3: 4/8.
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _box(0, 4, 0, 3)},
        # B plus one extra column: IoU 16/20.
        {"image_id": 1, "category_id": 2, "score": 0.8, "segmentation": _box(6, 10, 5, 10)},
    ]
    report = evaluate(_tiny(tmp_path), preds)
    assert report.matched == 2
    assert report.mIoU == pytest.approx((12 / 16 + 16 / 20) / 2)
    assert report.mIoU_occ == pytest.approx(4 / 8)
    assert report.per_bucket["0.3-0.5"]["mIoU"] == pytest.approx(0.75)
    assert report.per_bucket["0.3-0.5"]["mIoU_occ"] == pytest.approx(0.5)
    assert report.per_bucket["0-0.1"]["mIoU"] == pytest.approx(0.8)
    assert report.per_bucket["0-0.1"]["mIoU_occ"] is None
    assert report.per_bucket[">0.5"]["count"] == 0
    base = report.baseline
    assert base is not None
    assert base["mIoU"] == pytest.approx((8 / 16 + 1.0) / 2) and base["mIoU_occ"] == 0.0


def test_greedy_matching_by_score_and_category(tmp_path: Path) -> None:
    gt = _tiny(tmp_path)
    preds = [
        {"image_id": 1, "category_id": 1, "score": 0.3, "segmentation": _box(0, 4, 0, 4)},
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _box(0, 4, 0, 3)},
        # Right mask, wrong class: unmatched per class, matched class-agnostic.
        {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": _box(6, 10, 6, 10)},
    ]
    report = evaluate(gt, preds)
    # The higher-scored, worse prediction takes A first; the perfect one is left over.
    assert report.matched == 1 and report.unmatched_gt == 1
    assert report.mIoU == pytest.approx(0.75)
    agnostic = evaluate(gt, preds, class_agnostic=True)
    assert agnostic.matched == 2 and agnostic.mIoU == pytest.approx((0.75 + 1.0) / 2)
    assert agnostic.AP is not None and report.AP is not None and agnostic.AP > report.AP


def test_empty_predictions_score_zero(synth_gt: AmodalDataset) -> None:
    report = evaluate(synth_gt, [])
    assert report.AP == 0.0 and report.AR == 0.0
    assert report.mIoU is None and report.mIoU_occ is None
    assert report.unmatched_gt == report.num_gt > 0
    assert "-" in report.format_table()


def test_bad_predictions_are_rejected(tmp_path: Path) -> None:
    gt = _tiny(tmp_path)
    with pytest.raises(InputError, match="image_id 99 is not in the ground truth"):
        evaluate(gt, [{"image_id": 99, "category_id": 1, "segmentation": _box(0, 1, 0, 1)}])
    with pytest.raises(InputError, match="prediction #0"):
        evaluate(gt, [{"image_id": 1}])
    bad = tmp_path / "p.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(InputError, match="JSON list"):
        evaluate(gt, bad)


@pytest.mark.parametrize(
    ("rate", "key"),
    [(0.0, "0-0.1"), (0.1, "0-0.1"), (0.2, "0.1-0.3"), (0.5, "0.3-0.5"), (0.51, ">0.5"),
     (1.0, ">0.5")],
)  # fmt: skip
def test_buckets(rate: float, key: str) -> None:
    assert bucket_of(rate) == key


def test_occluded_iou_of_empty_region_is_one() -> None:
    z = np.zeros((3, 3), bool)
    assert occluded_iou(z, z) == 1.0


def test_cli_prints_table_and_writes_json(
    tmp_path: Path, synth_gt: AmodalDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_sameo.commands import evaluate as command

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(synth_gt.to_coco()))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(_preds(synth_gt)))
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "figures.json"
    args = parser.parse_args(
        ["eval", "--gt", str(gt), "--pred", str(pred), "--class-agnostic", "--json", str(out)]
    )
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "class-agnostic" in table and "mIoU_occ" in table and "100.00" in table
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS and figures["AP"] == pytest.approx(1.0)
    assert set(figures["per_bucket"]) == {"0-0.1", "0.1-0.3", "0.3-0.5", ">0.5"}

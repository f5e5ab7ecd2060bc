"""Results as ``supervision.Detections`` (edge_sameo.integrations.supervision), checked with
the real supervision package: fields, filtering and drawing with its annotators."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edge_sameo import AmodalPredictor
from edge_sameo.modeling import EfficientSam
from edge_sameo.predictor import Prediction
from edge_sameo.stream import FrameResult, GroundTruthDetector, stream
from tests.test_stream import dual_tiny, synth

sv = pytest.importorskip("supervision")


@pytest.fixture(scope="module")
def predictor() -> AmodalPredictor:
    return AmodalPredictor(dual_tiny())


@pytest.fixture(scope="module")
def results(predictor: AmodalPredictor) -> list[FrameResult]:
    out = list(stream(synth(5), GroundTruthDetector(), predictor))
    assert sum(len(r.objects) for r in out) > 0
    return out


def test_frame_result_round_trip(results: list[FrameResult]) -> None:
    occluded = 0
    for r in results:
        det = r.to_supervision()
        assert isinstance(det, sv.Detections)
        assert len(det) == len(r.objects)
        assert det.mask is not None and det.mask.dtype == bool
        assert det.mask.shape == (len(r.objects), *r.frame.image.shape[:2])
        for i, o in enumerate(r.objects):
            np.testing.assert_array_equal(det.mask[i], o.amodal)
            np.testing.assert_array_equal(det.data["visible_mask"][i], o.visible)
            np.testing.assert_allclose(det.xyxy[i], o.box)
            assert det.tracker_id is not None and det.tracker_id[i] == o.track_id
            assert det.class_id is not None and det.class_id[i] == o.class_id
            assert det.data["class_name"][i] == o.class_name
            assert det.confidence is not None
            assert det.confidence[i] == pytest.approx(o.score)
            assert det.data["occlusion"][i] == pytest.approx(o.occlusion_ratio, abs=1e-6)
            assert det.data["order"][i] == o.order
            occluded += o.occlusion_ratio > 0
    assert occluded > 0  # the synthetic scenes overlap: some object is partly hidden


def test_filtering_keeps_data_in_step(results: list[FrameResult]) -> None:
    r = max(results, key=lambda r: sum(o.order > 0 for o in r.objects))
    det = r.to_supervision()
    front = det[det.data["order"] == 0]
    assert 0 < len(front) < len(det)  # some objects are behind others
    by_id = {o.track_id: o for o in r.objects}
    assert front.tracker_id is not None and front.mask is not None
    for i, track in enumerate(front.tracker_id):
        np.testing.assert_array_equal(front.mask[i], by_id[int(track)].amodal)
        np.testing.assert_array_equal(front.data["visible_mask"][i], by_id[int(track)].visible)
        assert by_id[int(track)].order == 0


def test_mask_annotator_draws_inside_the_masks(results: list[FrameResult]) -> None:
    r = max(results, key=lambda r: len(r.objects))
    det = r.to_supervision()
    # A mask annotator fills ``mask``: keep the two smallest objects so that part of the
    # frame lies outside every mask (the seeded tiny model's masks are large).
    assert det.mask is not None
    small = det[np.argsort(det.mask.sum(axis=(1, 2)))[:2]]
    assert small.mask is not None
    image = r.frame.image
    drawn = sv.MaskAnnotator(opacity=0.6).annotate(image.copy(), small)
    changed = np.any(drawn != image, axis=-1)
    inside = small.mask.any(axis=0)
    assert inside.any() and (~inside).any()
    assert changed[inside].mean() > 0.9
    assert not changed[~inside].any()
    labelled = sv.LabelAnnotator().annotate(image.copy(), small)  # reads data["class_name"]
    assert np.any(labelled != image)


def test_prediction_to_supervision(predictor: AmodalPredictor, results: list[FrameResult]) -> None:
    predictor.set_image(results[0].frame.image)
    boxes = np.array([[10, 10, 80, 80], [40, 30, 150, 110]], np.float32)
    pred = predictor.predict(boxes)
    det = pred.to_supervision()
    assert pred.visible_masks is not None
    np.testing.assert_array_equal(det.mask, pred.masks)
    np.testing.assert_array_equal(det.data["visible_mask"], pred.visible_masks)
    np.testing.assert_allclose(det.xyxy, pred.boxes)
    np.testing.assert_allclose(det.confidence, pred.scores)
    assert det.class_id is None and det.tracker_id is None
    for i in range(len(pred)):
        a, v = pred.masks[i], pred.visible_masks[i]
        expected = 1 - np.count_nonzero(a & v) / np.count_nonzero(a) if a.any() else 0.0
        assert det.data["occlusion"][i] == pytest.approx(expected, abs=1e-6)
    empty = predictor.predict(np.zeros((0, 4), np.float32)).to_supervision()
    assert len(empty) == 0 and empty.mask is not None and empty.mask.shape == (0, 120, 160)


def test_prediction_order_and_occlusion_from_masks() -> None:
    h, w = 40, 40
    back = np.zeros((h, w), bool)
    back[5:30, 5:30] = True
    front = np.zeros((h, w), bool)
    front[15:35, 15:35] = True
    pred = Prediction(
        masks=np.stack([back, front]),
        scores=np.array([0.9, 0.8], np.float32),
        low_res_logits=np.zeros((2, 3, 8, 8), np.float32),
        iou_predictions=np.zeros((2, 3), np.float32),
        boxes=np.array([[5, 5, 30, 30], [15, 15, 35, 35]], np.float32),
        visible_masks=np.stack([back & ~front, front]),
    )
    det = pred.to_supervision()
    assert det.data["order"].tolist() == [1, 0]  # the second square is in front
    hidden = np.count_nonzero(back & front) / np.count_nonzero(back)
    np.testing.assert_allclose(det.data["occlusion"], [hidden, 0.0], atol=1e-6)


def test_prediction_without_modal_decoder(tiny_model: EfficientSam, rgb_image: np.ndarray) -> None:
    predictor = AmodalPredictor(tiny_model)
    predictor.set_image(rgb_image)
    pred = predictor.predict([[5, 6, 60, 70]])
    assert pred.visible_masks is None
    det = pred.to_supervision()
    np.testing.assert_array_equal(det.data["visible_mask"], pred.masks)
    assert det.data["occlusion"].tolist() == [0.0]


def test_missing_supervision_names_the_extra(
    results: list[FrameResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_sameo.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "supervision", None)  # what an absent package looks like
    with pytest.raises(MissingDependencyError, match=r"edge-sameo\[supervision\]"):
        results[0].to_supervision()

from __future__ import annotations

import numpy as np
import pytest

from edge_sameo import AmodalPredictor
from edge_sameo.boxes import clip_boxes
from edge_sameo.errors import InputError
from edge_sameo.modeling import EfficientSam
from edge_sameo.predictor import cut_to_boxes


@pytest.fixture()
def predictor(tiny_model: EfficientSam, rgb_image: np.ndarray) -> AmodalPredictor:
    p = AmodalPredictor(tiny_model)
    p.set_image(rgb_image)
    return p


def test_result_shapes_and_types(predictor: AmodalPredictor) -> None:
    r = predictor.predict(np.array([[5, 6, 60, 70], [20, 10, 120, 90]], np.float32))
    lr = predictor.backend.contract.model.low_res_size
    assert r.masks.shape == (2, 96, 128) and r.masks.dtype == bool
    assert r.scores.shape == (2,) and r.scores.dtype == np.float32
    assert r.low_res_logits.shape == (2, 3, lr, lr) and r.low_res_logits.dtype == np.float32
    assert r.iou_predictions.shape == (2, 3)
    np.testing.assert_array_equal(r.scores, r.iou_predictions.max(axis=1))
    assert set(r.speed) == {"preprocess", "encoder", "decoder", "refiner", "postprocess"}


def test_best_mask_is_the_thresholded_best_candidate(predictor: AmodalPredictor) -> None:
    import torch
    import torch.nn.functional as F

    r = predictor.predict([[5, 6, 60, 70]])
    best = int(r.iou_predictions[0].argmax())
    up = F.interpolate(torch.from_numpy(r.low_res_logits), (96, 128), mode="bicubic")
    np.testing.assert_array_equal(r.masks[0], (up[0, best] >= 0).numpy())


def test_zero_boxes(predictor: AmodalPredictor) -> None:
    r = predictor.predict(np.zeros((0, 4)))
    assert len(r) == 0 and r.masks.shape == (0, 96, 128)
    assert r.low_res_logits.shape[0] == 0 and r.iou_predictions.shape == (0, 3)
    assert len(predictor.predict([])) == 0


def test_reversed_corners_and_clipping(predictor: AmodalPredictor) -> None:
    ordered = predictor.predict([[5, 6, 60, 70]])
    reversed_ = predictor.predict([[60, 70, 5, 6]])
    np.testing.assert_array_equal(ordered.masks, reversed_.masks)
    clipped = predictor.predict([[-50, -20, 500, 400]])
    np.testing.assert_array_equal(clipped.boxes, [[0, 0, 128, 96]])
    np.testing.assert_array_equal(clipped.masks, predictor.predict([[0, 0, 128, 96]]).masks)


@pytest.mark.parametrize(
    "boxes, message",
    [
        ([[1, 2, 3, 4], [1, np.nan, 3, 4]], r"box 1 .* NaN or infinite"),
        ([[1, 2, np.inf, 4]], r"box 0 .* NaN or infinite"),
        ([[1, 2, 30, 40], [10, 10, 10, 50]], r"box 1 .* zero area"),
        ([[200, 200, 300, 300]], r"box 0 .* zero area after clipping"),
        ([[1, 2, 3]], r"shape \(N, 4\)"),
    ],
)
def test_bad_boxes_name_the_row(predictor: AmodalPredictor, boxes: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predictor.predict(boxes)


def test_clip_boxes_keeps_what_predict_accepts(predictor: AmodalPredictor) -> None:
    """The stream's one check per frame (``clip_boxes``) keeps exactly the boxes ``predict``
    accepts, clipped and reordered as ``predict`` does; ``predict_valid`` on them is
    ``predict``."""
    boxes = np.array(
        [[60, 70, 5, 6], [-50, -20, 500, 400], [1, np.nan, 3, 4], [np.inf, 0, 5, 5],
         [200, 200, 300, 300], [10, 10, 10, 50]],
        np.float32,
    )  # fmt: skip
    clean, valid = clip_boxes(boxes, (96, 128))
    assert valid.tolist() == [True, True, False, False, False, False]
    for box in boxes[~valid]:
        with pytest.raises(InputError):
            predictor.predict([box])
    expected = predictor.predict(boxes[valid])
    np.testing.assert_array_equal(clean[valid], expected.boxes)
    np.testing.assert_array_equal(predictor.predict_valid(clean[valid]).masks, expected.masks)


def test_predict_before_set_image(tiny_model: EfficientSam) -> None:
    with pytest.raises(InputError, match="set_image"):
        AmodalPredictor(tiny_model).predict([[0, 0, 10, 10]])


def test_image_conversions(tiny_model: EfficientSam, rgb_image: np.ndarray) -> None:
    p = AmodalPredictor(tiny_model)
    box = [[5, 6, 60, 70]]
    gray = rgb_image[..., 0]
    p.set_image(gray)
    from_gray = p.predict(box).masks
    p.set_image(np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(from_gray, p.predict(box).masks)

    p.set_image(np.concatenate([rgb_image, np.full((96, 128, 1), 7, np.uint8)], axis=2))
    from_rgba = p.predict(box).masks
    p.set_image(rgb_image)
    np.testing.assert_array_equal(from_rgba, p.predict(box).masks)

    p.set_image(rgb_image.astype(np.uint16) * 257)
    np.testing.assert_array_equal(p.predict(box).masks, from_rgba)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((10, 10, 3), np.float32), "dtype float32.*scale float images"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
    ],
)
def test_bad_images_rejected(tiny_model: EfficientSam, image: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        AmodalPredictor(tiny_model).set_image(image)


def test_cut_to_boxes_keeps_the_pixels_each_box_touches() -> None:
    masks = np.ones((3, 10, 12), bool)
    boxes = np.array([[2.5, 1.0, 6.2, 4.0], [-3, -3, 50, 50], [11.5, 9.5, 12, 10]], np.float32)
    cut_to_boxes(masks, boxes)
    first = np.zeros((10, 12), bool)
    first[1:4, 2:7] = True
    assert np.array_equal(masks[0], first)
    assert masks[1].all()  # a box past the image cuts nothing
    assert masks[2].sum() == 1 and masks[2, 9, 11]


def test_amodal_boxes_cut_the_masks_and_leave_modal_boxes_alone(
    predictor: AmodalPredictor,
) -> None:
    boxes = np.array([[5, 6, 60, 70], [20, 10, 120, 90]], np.float32)
    free = predictor.predict(boxes)
    cut = predictor.predict(boxes, amodal_boxes=True)
    expect = free.masks.copy()
    cut_to_boxes(expect, boxes)
    assert np.array_equal(cut.masks, expect)
    assert np.array_equal(cut.scores, free.scores)
    assert np.array_equal(predictor.predict(boxes).masks, free.masks)


@pytest.mark.parametrize("hw", [(480, 640), (96, 128), (200, 150)])
@pytest.mark.parametrize("size", [256, 1024])
def test_resize_pixels_is_the_originals_bilinear_resize(hw: tuple[int, int], size: int) -> None:
    """OpenCV's resize in ``resize_pixels`` computes what the original's ``/255`` then
    ``F.interpolate(bilinear, align_corners=False)`` does, down- and upscaling."""
    import torch.nn.functional as F

    from edge_sameo.preprocess import image_to_tensor, resize_pixels

    image = np.random.default_rng(sum(hw)).integers(0, 256, (*hw, 3), dtype=np.uint8)
    original = F.interpolate(
        image_to_tensor(image), (size, size), mode="bilinear", align_corners=False
    )
    ours = resize_pixels(image, size)
    assert ours.shape == (1, 3, size, size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, original.numpy(), atol=1e-6, rtol=0)

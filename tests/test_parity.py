"""The model is the original model, number for number (shared/reference vectors)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from edge_sameo import AmodalPredictor
from edge_sameo.checkpoint import state_dict_digest
from edge_sameo.modeling import EfficientSam
from edge_sameo.preprocess import boxes_to_model_frame, image_to_tensor, normalize_resized
from edge_sameo.seeded import reference_image, seeded_state_dict
from tests.conftest import reference_manifest

DIGESTS = {
    "vitt": "9f38863a1017fc4e35b9f9c8c3eef12bf334f6be898072fdb01e54f0ddb709bc",
    "vits": "7cd4d36386c6078a7a8cc10ba6e5c8a2231bdd01198a9f226cee6dcb1c1f3ff6",
}
IMAGE_DIGEST = "ad3fc80c2132ea0485a3ea83ee6281f8a51f4d3ea22e46024a863249718e1d61"


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("variant", ["vitt", "vits"])
def test_seeded_weights_follow_the_reference_rule(variant: str) -> None:
    sd = seeded_state_dict(reference_manifest(variant), seed=0)
    assert state_dict_digest(sd.values()) == DIGESTS[variant]


def test_reference_image_digest(reference_vectors: dict[str, np.ndarray]) -> None:
    img = reference_image(480, 640, seed=0)
    assert hashlib.sha256(img.tobytes()).hexdigest() == IMAGE_DIGEST
    np.testing.assert_array_equal(img, reference_vectors["image"])


def test_vitt_reproduces_original_outputs(
    seeded_vitt: EfficientSam, reference_vectors: dict[str, np.ndarray]
) -> None:
    ref = reference_vectors
    image, boxes = ref["image"], ref["boxes"]
    with torch.no_grad():
        emb = seeded_vitt.encode(normalize_resized(image_to_tensor(image), 1024))
        logits, iou = seeded_vitt.decode_boxes(
            emb, boxes_to_model_frame(torch.from_numpy(boxes), image.shape[:2], 1024)
        )
    assert rel_err(emb.numpy(), ref["image_embeddings"]) <= 1e-4
    assert rel_err(logits.numpy(), ref["low_res_logits"][0]) <= 1e-4
    assert rel_err(iou.numpy(), ref["iou_predictions"][0]) <= 1e-4


def test_predictor_reproduces_original_best_masks(
    seeded_vitt: EfficientSam, reference_vectors: dict[str, np.ndarray]
) -> None:
    ref = reference_vectors
    h, w = int(ref["best_mask_shape"][2]), int(ref["best_mask_shape"][3])
    expected = np.unpackbits(ref["best_masks"], axis=-1)[..., :w].astype(bool)[0]
    predictor = AmodalPredictor(seeded_vitt)
    predictor.set_image(ref["image"])
    result = predictor.predict(ref["boxes"])
    assert result.masks.shape == (3, h, w)
    assert (result.masks == expected).mean() >= 0.999
    assert rel_err(result.low_res_logits, ref["low_res_logits"][0]) <= 1e-4
    assert rel_err(result.iou_predictions, ref["iou_predictions"][0]) <= 1e-4
    np.testing.assert_allclose(result.scores, ref["iou_predictions"][0].max(axis=1), rtol=1e-4)

from __future__ import annotations

import pytest
import torch

from edge_sameo import CONFIGS, ModelConfig, build_model
from edge_sameo.checkpoint import config_manifest
from edge_sameo.modeling import set_token_layout
from tests.conftest import reference_manifest, seeded_tiny


@pytest.mark.parametrize("variant", ["vitt", "vits"])
def test_state_dict_layout_equals_original(variant: str) -> None:
    expected = reference_manifest(variant)
    assert len(expected) == 278
    assert list(config_manifest(CONFIGS[variant]).items()) == expected


def test_pixel_statistics_are_not_stored() -> None:
    keys = build_model("tiny").state_dict().keys()
    assert "pixel_mean" not in keys and "pixel_std" not in keys


def test_tiny_forward_shapes() -> None:
    model = seeded_tiny()
    cfg = model.config
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        emb = model.encode(x)
        assert emb.shape == (2, cfg.embed_dim, cfg.grid_size, cfg.grid_size)
        boxes = torch.tensor([[1.0, 2.0, 60.0, 70.0], [10.0, 10.0, 120.0, 100.0]])
        logits, iou = model.decode_boxes(emb[:1], boxes)
    assert logits.shape == (2, 3, cfg.low_res_size, cfg.low_res_size)
    assert iou.shape == (2, 3)
    assert torch.isfinite(logits).all()


def test_fused_attention_matches_explicit_form() -> None:
    model = seeded_tiny()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        fused = model.encode(x)
        model.set_fused_attention(False)
        explicit = model.encode(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


def test_box_prompts_padded_like_original() -> None:
    model = seeded_tiny()
    points, labels = model.box_prompts(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert points.shape == (1, 6, 2) and labels.shape == (1, 6)
    assert points[0, :2].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert (points[0, 2:] == -1).all()
    assert labels[0].tolist() == [2, 3, -1, -1, -1, -1]


def test_decoding_in_batch_equals_one_by_one() -> None:
    model = seeded_tiny()
    with torch.no_grad():
        emb = model.encode(torch.randn(1, 3, 128, 128))
        boxes = torch.tensor([[1.0, 2.0, 60.0, 70.0], [10.0, 10.0, 120.0, 100.0], [5, 5, 30, 30]])
        batched, iou_b = model.decode_boxes(emb, boxes)
        for i in range(3):
            single, iou_s = model.decode_boxes(emb, boxes[i : i + 1])
            torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(iou_b[i : i + 1], iou_s, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shared_embedding", [True, False])
def test_token_layout_decoder_matches_original(shared_embedding: bool) -> None:
    """The token-layout decoder (export and the fast runtimes) computes the original's
    numbers: upscaling as per-pixel products, few-key attention without head transposes,
    few-query attention without the image-side key and value projections (two layers, so
    that a layer after the first, with a per-box image, is covered)."""
    model = seeded_tiny(decoder_depth=2)
    torch.manual_seed(3)
    for name, p in model.mask_decoder.named_parameters():
        if name.endswith("bias") or isinstance(
            model.mask_decoder.get_submodule(name.rsplit(".", 1)[0]), torch.nn.GroupNorm
        ):
            p.data.normal_()  # non-zero biases (the bias moves) and GroupNorm affine
    boxes = torch.tensor([[1.0, 2.0, 60.0, 70.0], [10.0, 10.0, 120.0, 100.0], [5, 5, 30, 30]])
    with torch.no_grad():
        emb = model.encode(torch.randn(1 if shared_embedding else 3, 3, 128, 128))
        original = model.decode_boxes(emb, boxes)
        set_token_layout(model, True)
        assert model.mask_decoder.subpixel_upscaling
        transformer = model.mask_decoder.transformer
        assert [layer.cross_attn_token_to_image.few_queries for layer in transformer.layers] == [
            False,
            True,
        ]
        assert [layer.cross_attn_image_to_token.fold_queries for layer in transformer.layers] == [
            False,
            True,
        ]
        assert transformer.final_attn_token_to_image.few_queries
        fast = model.decode_boxes(emb, boxes)
        single = model.decode_boxes(emb[:1], boxes[:1], multimask_output=False)
        set_token_layout(model, False)
        single_original = model.decode_boxes(emb[:1], boxes[:1], multimask_output=False)
    for a, b in zip(fast, original, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(single[0], single_original[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"img_size": 1000}, "multiple of patch_size"),
        ({"encoder_heads": 5}, "encoder_heads"),
        ({"max_num_points": 1}, "max_num_points"),
    ],
)
def test_config_validation(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(name="bad", **kwargs)  # type: ignore[arg-type]


def test_config_dict_roundtrip_and_unknown_name() -> None:
    cfg = CONFIGS["tiny"]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config"):
        build_model("vit_h")
    with pytest.raises(ValueError, match="unknown model config fields"):
        ModelConfig.from_dict({"name": "x", "depth": 3})

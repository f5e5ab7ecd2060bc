"""The object-resolution refiner: module, window geometry, checkpoint, contract, predictor."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sameo import bundled
from edge_sameo.backends.torch_backend import TorchBackend, model_contract
from edge_sameo.checkpoint import load_model, save_model
from edge_sameo.contract import ExportContract
from edge_sameo.modeling import EfficientSam, MaskRefiner, RefinerConfig
from edge_sameo.modeling.refiner import LOGIT_CLIP
from edge_sameo.predictor import AmodalPredictor
from edge_sameo.refine import (
    crop_inputs,
    crop_masks,
    mask_boxes,
    paste_masks,
    refine_windows,
    refiner_crops,
)

SMALL = RefinerConfig(crop=32, widths=(4, 8, 16))


def with_refiner(model: EfficientSam, cfg: RefinerConfig = SMALL, seed: int = 0) -> EfficientSam:
    import copy

    model.modal_decoder = copy.deepcopy(model.mask_decoder)
    torch.manual_seed(seed)
    model.refiner = MaskRefiner(cfg).eval()
    return model


def disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 < r**2


@pytest.mark.parametrize(
    ("crop", "widths", "use_logits", "occluders", "channels"),
    [
        (32, (4, 8, 16), True, False, 6),
        (64, (8, 16, 32, 64), False, False, 4),
        (32, (4, 8), True, True, 7),
    ],
)
def test_refiner_shapes(
    crop: int, widths: tuple[int, ...], use_logits: bool, occluders: bool, channels: int
) -> None:
    cfg = RefinerConfig(crop=crop, widths=widths, use_logits=use_logits, occluders=occluders)
    assert cfg.in_channels == channels
    out = MaskRefiner(cfg)(torch.zeros(3, cfg.in_channels, crop, crop))
    assert out.shape == (3, 2, crop, crop)
    assert RefinerConfig.from_dict(cfg.to_dict()) == cfg


def test_the_mirror_averages_the_last_stage_over_its_mirror() -> None:
    cfg = dataclasses.replace(SMALL, stages=2, occluders=True)
    torch.manual_seed(3)
    plain = MaskRefiner(cfg).eval()
    mirrored = MaskRefiner(dataclasses.replace(cfg, mirror=True)).eval()
    mirrored.load_state_dict(plain.state_dict())  # the same weights: a switch, not a model
    x = torch.randn(3, cfg.in_channels, cfg.crop, cfg.crop)
    with torch.no_grad():
        first = plain.forward_stages(x)[0]
        keep, extra = x[:, : cfg.prompt_channels], x[:, cfg.prompt_channels + 2 :]
        z = torch.cat([keep, first.clamp(-LOGIT_CLIP, LOGIT_CLIP) / LOGIT_CLIP, extra], 1)
        last = plain.cascade[0]
        assert isinstance(last, MaskRefiner)
        expect = (last._unet(z) + last._unet(z.flip(3)).flip(3)) / 2
        got = mirrored.forward_stages(x)
        torch.testing.assert_close(got[0], first)  # earlier stages run once, unmirrored
        torch.testing.assert_close(got[1], expect)
        assert not torch.allclose(got[1], plain(x), atol=1e-3)  # the mean changed something


@pytest.mark.parametrize(
    "bad",
    [
        {"crop": 30, "widths": (4, 8, 16)},
        {"widths": (8,)},
        {"grow": 0.5},
        {"stages": 0},
        {"use_logits": False, "occluders": True},
    ],
)
def test_refiner_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RefinerConfig(**bad)  # type: ignore[arg-type]


def test_cascade_stages_refine_the_previous_logits(tmp_path: Path) -> None:
    """A two-stage cascade: the second U-Net sees RGB + box + the first's logits; its
    output is the refiner's; ``fit --init`` of a one-stage refiner starts both stages."""
    from edge_sameo.train.refiner import load_init

    one = MaskRefiner(dataclasses.replace(SMALL, stages=1)).eval()
    torch.save({"config": one.config.to_dict(), "state_dict": one.state_dict()}, tmp_path / "r")
    two = MaskRefiner(dataclasses.replace(SMALL, stages=2)).eval()
    load_init(two, tmp_path / "r")
    x = torch.randn(3, 6, 32, 32)
    with torch.no_grad():
        first, second = two.forward_stages(x)
        assert torch.equal(first, one(x)) and torch.equal(second, two(x))
        prev = torch.clamp(first, -10, 10) / 10
        assert torch.equal(second, one(torch.cat([x[:, :4], prev], dim=1)))
    with pytest.raises(SystemExit):  # a different U-Net cannot start it
        load_init(MaskRefiner(dataclasses.replace(SMALL, widths=(4, 8))), tmp_path / "r")


def test_the_occluder_channel_reaches_every_stage_and_grows_from_a_refiner_without(
    tmp_path: Path,
) -> None:
    """Every cascade stage reads the occluder channel (the last input); ``fit --init`` of the
    same refiner without it starts with the new channel's weights at zero, computing the
    init's function on the other channels."""
    from edge_sameo.train.refiner import load_init

    two = MaskRefiner(dataclasses.replace(SMALL, stages=2)).eval()
    torch.save({"config": two.config.to_dict(), "state_dict": two.state_dict()}, tmp_path / "r")
    grown = MaskRefiner(dataclasses.replace(SMALL, stages=2, occluders=True)).eval()
    load_init(grown, tmp_path / "r")
    x = torch.randn(3, 7, 32, 32)
    with torch.no_grad():
        assert torch.equal(grown(x), two(x[:, :6]))
        # trained weights on the channel: the output depends on it in both stages
        for stage in (grown, grown.cascade[0]):
            assert isinstance(stage, MaskRefiner)
            first_conv = stage.down[0][0]
            assert isinstance(first_conv, torch.nn.Conv2d) and first_conv.in_channels == 7
            first_conv.weight[:, 6] = 0.5
        first, second = grown.forward_stages(x)
        prev = torch.clamp(first, -10, 10) / 10
        stage2 = grown.cascade[0]
        assert isinstance(stage2, MaskRefiner)
        assert torch.equal(second, stage2(torch.cat([x[:, :4], prev, x[:, 6:]], dim=1)))
        x2 = x.clone()
        x2[:, 6] = -x2[:, 6]
        assert not torch.equal(grown(x2), grown(x))


def test_other_boxes_max() -> None:
    from edge_sameo.refine import other_boxes_max

    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        v = rng.normal(size=(n, 4, 6)).astype(np.float32)
        got = other_boxes_max(v)
        for i in range(n):
            np.testing.assert_array_equal(got[i], np.delete(v, i, 0).max(0))
    np.testing.assert_array_equal(other_boxes_max(np.zeros((1, 4, 6), np.float32)), -1.0)


def test_windows_unite_prompt_and_coarse_box_and_grow() -> None:
    prompts = np.array([[10, 20, 30, 40], [0, 0, 2, 2]], np.float32)
    coarse = np.array([[5, 20, 30, 60], [np.nan] * 4], np.float32)
    win = refine_windows(prompts, coarse, grow=2.0)
    # union (5, 20, 30, 60): centre (17.5, 40), size (25, 40) -> (50, 80)
    np.testing.assert_allclose(win[0], [-7.5, 0, 42.5, 80])
    # NaN coarse box ignored; a 2-px box gets the minimum window
    np.testing.assert_allclose(win[1], [-3, -3, 5, 5])


def test_mask_boxes_from_low_res_logits() -> None:
    lo = np.full((2, 16, 16), -5.0, np.float32)
    lo[0, 4:8, 2:6] = 3.0
    boxes = mask_boxes(lo, (160, 320))  # 10 px rows, 20 px columns per low-res cell
    np.testing.assert_allclose(boxes[0], [40, 40, 120, 80])
    assert np.isnan(boxes[1]).all()


def test_crop_then_paste_recovers_the_mask() -> None:
    h, w = 120, 160
    masks = np.stack([disc(h, w, 70, 60, 30), disc(h, w, 150, 10, 20)])  # second leaves image
    prompts = np.array([[40, 30, 100, 90], [130, 0, 160, 30]], np.float32)
    windows = refine_windows(prompts, None, 1.5)
    crops = crop_masks(masks, windows, 64)
    assert crops.shape == (2, 64, 64) and 0 <= crops.min() and crops.max() <= 1
    logits = np.repeat((crops * 2 - 1)[:, None] * 10, 2, axis=1).astype(np.float32)
    amodal, visible = paste_masks(logits, windows, (h, w))
    for i in range(2):
        iou = (amodal[i] & masks[i]).sum() / (amodal[i] | masks[i]).sum()
        assert iou > 0.97
    assert not (visible & ~amodal).any()
    assert not amodal[0, :, :20].any()  # nothing outside the window


def test_crop_inputs_channels() -> None:
    h, w = 64, 96
    image = np.full((h, w, 3), (124, 116, 104), np.uint8)  # ~ImageNet mean
    prompts = np.array([[24, 16, 72, 48]], np.float32)
    windows = refine_windows(prompts, None, 2.0)  # (0, 0, 96, 64): 3 × 2 px per crop px
    lo = np.full((1, 16, 16), -20.0, np.float32)
    lo[0, 4:12, 4:12] = 20.0  # the middle of the image
    x = crop_inputs(image, windows, prompts, SMALL, lo, lo * 0.1)
    assert x.shape == (1, 6, 32, 32) and x.dtype == np.float32
    assert np.abs(x[0, :3]).max() < 0.02  # mean grey -> 0
    box = x[0, 3]
    assert box[8:24, 8:24].all() and box.sum() == 16 * 16
    assert x[0, 4].max() == 1.0 and x[0, 4].min() == -1.0  # clipped to ±10, / 10
    assert x[0, 4, 16, 16] == 1.0 and x[0, 4, 0, 0] == -1.0
    np.testing.assert_allclose(x[0, 5, 16, 16], 0.2)
    with pytest.raises(ValueError, match="logits"):
        crop_inputs(image, windows, prompts, SMALL)


def test_crop_inputs_occluder_channel() -> None:
    """With ``occluders`` each box's last channel is the other boxes' visible logits in its
    window: box 0 sees box 1's visible part and box 1 sees box 0's."""
    h, w = 64, 96
    image = np.full((h, w, 3), 128, np.uint8)
    prompts = np.array([[0, 0, 48, 64], [48, 0, 96, 64]], np.float32)
    windows = np.array([[0, 0, 96, 64]] * 2, np.float32)  # both windows: the whole image
    visible = np.full((2, 16, 16), -20.0, np.float32)
    visible[0, :, :8] = 20.0  # box 0 visible on the left half, box 1 on the right
    visible[1, :, 8:] = 20.0
    cfg = dataclasses.replace(SMALL, occluders=True)
    x = crop_inputs(image, windows, prompts, cfg, visible, visible)
    assert x.shape == (2, 7, 32, 32)
    np.testing.assert_array_equal(x[:, 6], x[::-1, 5])  # the other box's visible channel
    assert x[0, 6, 16, 28] == 1.0 and x[0, 6, 16, 3] == -1.0


def test_checkpoint_round_trip_keeps_the_refiner(tiny_model: EfficientSam, tmp_path: Path) -> None:
    model = with_refiner(tiny_model)
    path = tmp_path / "m.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.refiner is not None and loaded.refiner.config == SMALL
    x = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.refiner(x), loaded.refiner(x))  # type: ignore[misc]
    # a model without one stays without one
    save_model(build_plain(tmp_path), tmp_path / "plain.pt")
    assert load_model(tmp_path / "plain.pt").refiner is None


def build_plain(tmp_path: Path) -> EfficientSam:
    from edge_sameo import build_model

    return build_model("tiny")


def test_contract_round_trip_with_refiner(tiny_model: EfficientSam) -> None:
    contract = model_contract(with_refiner(tiny_model))
    assert contract.has_refiner and contract.refiner is not None
    assert [g.name for g in contract.graphs] == ["encoder", "decoder", "refiner"]
    again = ExportContract.from_dict(contract.to_dict())
    assert again.refiner == contract.refiner and again.refiner_config == SMALL
    assert not model_contract(build_plain(Path("."))).has_refiner


def test_predictor_uses_the_refiner(tiny_model: EfficientSam, rgb_image: np.ndarray) -> None:
    model = with_refiner(tiny_model)
    predictor = AmodalPredictor(model)
    predictor.set_image(rgb_image)
    boxes = np.array([[10, 10, 60, 50], [40, 30, 120, 90], [0, 0, 128, 96]], np.float32)
    res = predictor.predict(boxes)
    assert res.masks.shape == (3, 96, 128) and res.visible_masks is not None
    assert not (res.visible_masks & ~res.masks).any()
    assert res.speed["refiner"] > 0
    # the masks are the refiner's, pasted back: recompute them by hand (128 px frame)
    backend = predictor.backend
    out = backend.decode(predictor.image_embedding, boxes * np.float32(128 / 128))
    amodal_lr = out.low_res_logits[np.arange(3), out.iou_predictions.argmax(1)]
    assert out.modal_low_res_logits is not None and out.modal_iou_predictions is not None
    visible_lr = out.modal_low_res_logits[np.arange(3), out.modal_iou_predictions.argmax(1)]
    windows, crops = refiner_crops(rgb_image, boxes, SMALL, amodal_lr, visible_lr)
    np.testing.assert_array_equal(
        windows, refine_windows(boxes, mask_boxes(amodal_lr, (96, 128)), SMALL.grow)
    )
    amodal, visible = paste_masks(backend.refine(crops), windows, (96, 128))
    assert np.array_equal(amodal, res.masks) and np.array_equal(visible, res.visible_masks)
    # chunking by max_boxes gives the same logits as one call
    crops = np.random.default_rng(0).normal(size=(5, 6, 32, 32)).astype(np.float32)
    whole = backend.refine(crops)
    backend.max_boxes = 2
    np.testing.assert_allclose(backend.refine(crops), whole, rtol=1e-5, atol=1e-5)


def test_refiner_changes_the_masks(tiny_model: EfficientSam, rgb_image: np.ndarray) -> None:
    """A refiner that says "everything" inside its window gives masks that fill it."""
    model = with_refiner(tiny_model)
    assert model.refiner is not None
    with torch.no_grad():
        model.refiner.head.weight.zero_()
        model.refiner.head.bias.fill_(5.0)
    predictor = AmodalPredictor(TorchBackend(model, device="cpu"))
    predictor.set_image(rgb_image)
    res = predictor.predict(np.array([[40, 30, 80, 70]], np.float32))
    ys, xs = np.nonzero(res.masks[0])
    assert xs.min() <= 40 and xs.max() >= 79 and ys.min() <= 30 and ys.max() >= 69
    # told the box is amodal (the whole object's extent), both masks stop at its pixels:
    # those it covers, even in part
    cut = predictor.predict(np.array([[40.5, 30.2, 79.5, 69.9]], np.float32), amodal_boxes=True)
    box = np.zeros((96, 128), bool)
    box[30:70, 40:80] = True
    assert cut.visible_masks is not None
    assert np.array_equal(cut.masks[0], box) and np.array_equal(cut.visible_masks[0], box)


def test_model_card_shows_the_refiner_and_the_second_world() -> None:
    from edge_sameo.train.card import render

    metrics = json.loads((bundled.MODELS / "nano" / "metrics.json").read_text())
    metrics = {k: v for k, v in metrics.items() if k not in ("refiner", "second_world")}
    plain = render(metrics)
    assert "refiner" not in plain.split("## Files")[0]
    test = metrics["test"]
    with_ref = {
        **metrics,
        "refiner": {
            "commands": ["python -m edge_sameo.train.refiner fit ..."],
            "config": SMALL.to_dict(),
            "params": 1234,
            "summary": "trained 1 min",
        },
        "second_world": {**test, "description": "another world"},
    }
    card = render(with_ref)
    assert "**refiner**" in card and "python -m edge_sameo.train.refiner fit ..." in card
    assert "(1,234 parameters)" in card
    assert "A second synthetic world, never trained on** (another world" in card


# --------------------------------------------------------------------------- training


def test_samples_are_what_the_app_feeds_the_refiner(tiny_model: EfficientSam) -> None:
    """A training sample's inputs equal the predictor's crops for the same boxes."""
    from edge_sameo.data.synth import SynthConfig
    from edge_sameo.train.refiner import scene_samples, world_images

    model = with_refiner(tiny_model)
    synth = SynthConfig(size=(160, 120), objects=(2, 3))
    image, amodal, visible = next(world_images(5, 0, 1, synth))
    rng = np.random.default_rng(0)
    s = scene_samples(model, image, amodal, visible, rng, SMALL)
    n = len(amodal)
    assert s.inputs.shape == (n, 6, 32, 32) and s.targets.shape == (n, 2, 32, 32)
    # with the occluder channel: the same samples and one channel more
    cfg = dataclasses.replace(SMALL, occluders=True)
    s7 = scene_samples(model, image, amodal, visible, np.random.default_rng(0), cfg)
    assert s7.inputs.shape == (n, 7, 32, 32)
    np.testing.assert_array_equal(s7.inputs[:, :6], s.inputs)
    assert s.inputs.dtype == np.float16 and s.targets.dtype == np.uint8
    np.testing.assert_allclose(s.occlusion, 1 - visible.sum((1, 2)) / amodal.sum((1, 2)), 1e-6)
    # targets: visible inside amodal (up to resampling), both non-empty for visible objects
    assert (s.targets[:, 1].astype(int) <= s.targets[:, 0].astype(int) + 1).all()
    # the same boxes through the predictor give the same crops (the box channel is exact)
    box_channel = s.inputs[:, 3] > 0.5
    assert box_channel.any(axis=(1, 2)).all()


def test_augment_moves_inputs_and_targets_together() -> None:
    """``fit --augment``: the square's symmetries move every channel and both targets alike
    (the box and logit channels keep their values, only moved); colour jitter changes the RGB
    channels only and keeps them within the normalised range of 0..255 pixels."""
    from edge_sameo.modeling.efficient_sam import PIXEL_MEAN, PIXEL_STD
    from edge_sameo.train.refiner import augment_batch

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(32, 6, 16, 16)).astype(np.float32))
    y = torch.cat([x[:, 3:6].clone(), torch.rand(32, 1, 16, 16)], 1)  # targets = channels 3..5
    rgb_before = x[:, :3].clone()
    xa, ya = augment_batch(x, y, np.random.default_rng(1))
    assert torch.equal(xa[:, 3:6], ya[:, :3])  # moved together
    assert not torch.equal(xa[:, :3], rgb_before)
    mean, std = (
        torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (PIXEL_MEAN, PIXEL_STD)
    )
    low, high = -mean / std, (1 - mean) / std
    assert bool(((xa[:, :3] >= low - 1e-4) & (xa[:, :3] <= high + 1e-4)).all())


def test_fit_then_attach(tiny_model: EfficientSam, tmp_path: Path) -> None:
    from edge_sameo.train.refiner import Samples, main

    rng = np.random.default_rng(0)
    n = 40
    samples = Samples(
        inputs=rng.normal(size=(n, 6, 32, 32)).astype(np.float16),
        targets=(rng.random((n, 2, 32, 32)) > 0.5).astype(np.uint8) * 255,
        occlusion=np.linspace(0, 0.6, n, dtype=np.float32),
        amodal_prompt=np.arange(n) % 2 == 0,
    )
    for folder in ("shards", "val"):
        (tmp_path / folder).mkdir()
        samples.save(tmp_path / folder / "shard_00000.npz")
    args = ["fit", "--shards", str(tmp_path / "shards"), "--val", str(tmp_path / "val")]
    args += ["--out", str(tmp_path / "fit"), "--minutes", "0.05", "--crop", "32"]
    args += ["--widths", "4,8,16", "--batch", "8", "--eval-every", "1", "--flip", "--augment"]
    assert main(args) == 0
    rows = (tmp_path / "fit" / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("elapsed_s,step,samples,loss,amodal_occ_modal_box")
    assert len(rows) >= 2
    state = torch.load(tmp_path / "fit" / "state.pt", weights_only=True)
    assert state["step"] > 0 and state["seen"] == 8 * state["step"]
    # a rerun resumes: the budget is spent, nothing more is trained
    assert main(args) == 0
    again = torch.load(tmp_path / "fit" / "state.pt", weights_only=True)
    assert again["step"] == state["step"]
    # a refiner that reads the occluder channel needs samples that carry it
    occ = [*args[:6], str(tmp_path / "occ"), *args[7:], "--occluders"]
    with pytest.raises(SystemExit, match="gen --occluders"):
        main(occ)

    base = tmp_path / "base.pt"
    save_model(with_refiner(tiny_model), base)
    out = tmp_path / "with_refiner.pt"
    assert (
        main(
            [
                "attach",
                "--model",
                str(base),
                "--refiner",
                str(tmp_path / "fit" / "refiner.pt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    model = load_model(out)
    assert model.refiner is not None and model.refiner.config.widths == (4, 8, 16)
    trained = torch.load(tmp_path / "fit" / "refiner.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, model.refiner.state_dict()[k]) for k, v in trained.items())


@pytest.mark.slow
def test_nano_recipe_with_a_refiner_stage(tmp_path: Path) -> None:
    from edge_sameo.train.nano import run_recipe
    from tests.conftest import tiny_nano_recipe

    recipe = tiny_nano_recipe(
        tmp_path / "nano",
        refiner={
            "minutes": 0.05,
            "cascade_minutes": 0.05,
            "widths": "4,8,16",
            "crop": 32,
            "shards": 2,
            "scenes": 2,
            "val_scenes": 2,
            "threads": 1,
            "bf16": False,
            "keep": 2,
            "batch": 4,
        },
    )
    result = run_recipe(recipe)
    model = load_model(recipe.out / "nano.pt")
    assert model.refiner is not None and model.refiner.config.crop == 32
    assert model.refiner.config.stages == 2  # a one-stage fit, then the cascade from it
    assert result["test"]["refiner"] is True
    assert result["refiner_stage"]["last"]["step"] > 0
    assert result["refiner_stage"]["weights"].endswith("cascade/refiner.pt")
    assert (recipe.runs / "refiner" / "fit" / "refiner.pt").is_file()
    assert (recipe.runs / "refiner" / "val" / "shard_00000.npz").is_file()

"""Training recipe: config, sampling, prompts, loss, prepared data, embedding cache, the
loop (decoder and full mode), resume, DDP equivalence, export, CLI — on the tiny config
at 128 px with a few synthetic scenes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edge_sameo import build_model
from edge_sameo.checkpoint import load_model
from edge_sameo.contract import ExportContract
from edge_sameo.data import SynthConfig, generate_dataset
from edge_sameo.errors import InputError
from edge_sameo.preprocess import upscale_masks
from edge_sameo.train import trainer as trainer_mod
from edge_sameo.train.cache import encode_prepared, encoder_fingerprint, get_or_build
from edge_sameo.train.cli import main as train_main
from edge_sameo.train.config import DatasetSpec, TrainConfig, parse_overrides
from edge_sameo.train.data import prepare_dataset
from edge_sameo.train.export import SAMEO_FILE, TrainExportConfig, export_trained
from edge_sameo.train.losses import LossWeights, mask_iou, sameo_loss
from edge_sameo.train.sampling import epoch_picks, jitter_boxes, log_proportional, make_batch
from edge_sameo.train.trainer import fit, lr_factor
from tests.conftest import seeded_tiny

SYNTH = SynthConfig(size=(128, 96), objects=(2, 3), clutter=(0, 2))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Shared 2-core machines: one thread is much faster than two oversubscribed ones.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_world")
    init = root / "tiny.pt"
    torch.save({"model": seeded_tiny(0).state_dict()}, init)
    return {
        "train": generate_dataset(root / "train", 6, seed=1, cfg=SYNTH),
        "train2": generate_dataset(root / "train2", 3, seed=2, cfg=SYNTH),
        "val": generate_dataset(root / "val", 2, seed=3, cfg=SYNTH),
        "init": init,
        "cache": root / "cache",
        "root": root,
    }


def tiny_cfg(world: dict[str, Path], out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "out": out,
        "train": [world["train"]],
        "val": world["val"],
        "init": world["init"],
        "cache_dir": world["cache"],
        "epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup_steps": 1,
        "progress": False,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- config


def test_config_from_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"out": "o", "train": ["a.json", {"path": "b.json"}]}))
    from edge_sameo.train.config import load_yaml

    data = load_yaml(path)
    data.update(parse_overrides(["lr=3e-4", "amodal_box_prob=0.25", "val=v.json"]))
    cfg = TrainConfig.from_mapping(data)
    assert cfg.lr == pytest.approx(3e-4) and cfg.amodal_box_prob == 0.25
    assert [d.path for d in cfg.train] == [Path("a.json"), Path("b.json")]
    assert cfg.val == DatasetSpec(Path("v.json"))
    assert TrainConfig.from_mapping(cfg.to_dict()) == cfg  # round trip through plain data
    with pytest.raises(InputError, match="unknown training config keys: lrr"):
        TrainConfig.from_mapping({**data, "lrr": 1})
    with pytest.raises(InputError, match="amodal_box_prob"):
        TrainConfig(out=Path("o"), train=("a.json",), amodal_box_prob=1.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="key=value"):
        parse_overrides(["lr"])


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    """Every config under configs/ builds the TrainConfigs it promises (nano recipes: both
    stages, with the recipe's out folder and seeds; fit configs: one run)."""
    from edge_sameo.train.config import load_yaml
    from edge_sameo.train.nano import NanoRecipe, stage_configs

    data = load_yaml(path)
    if "stage1" in data:
        recipe = NanoRecipe.from_yaml(path)
        s1, s2 = stage_configs(recipe)
        assert recipe.config_file == str(path)
        assert s1.mode == "full" and s1.target == "visible"
        assert s2.mode == "decoder" and s2.target == "amodal" and s2.keep_modal
        assert s1.out.parent == s2.out.parent == recipe.runs
        assert s1.epochs == data["stage1"]["epochs"] and s2.epochs == data["stage2"]["epochs"]
        assert (s1.init is not None) == ("warm_start" in data)
    else:
        cfg = TrainConfig.from_mapping({**data, "train": data.get("train") or ["t.json"]})
        assert cfg.out == Path(data["out"])


# --------------------------------------------------------------------------- sampling


def test_log_proportional_mixture() -> None:
    p = log_proportional([10, 1000])
    assert p[1] / p[0] == pytest.approx(np.log1p(1000) / np.log1p(10))
    assert log_proportional([10, 10], [1.0, 3.0])[1] == pytest.approx(0.75)
    picks = epoch_picks([5, 50], log_proportional([5, 50]), 400, seed=0, epoch=0)
    share = np.mean(picks[:, 0] == 1)
    assert abs(share - log_proportional([5, 50])[1]) < 0.08
    small = picks[picks[:, 0] == 0, 1]
    # every image of a set is drawn before any is drawn twice
    assert sorted(small[:5]) == [0, 1, 2, 3, 4]
    again = epoch_picks([5, 50], log_proportional([5, 50]), 400, seed=0, epoch=0)
    assert np.array_equal(picks, again)
    assert not np.array_equal(picks, epoch_picks([5, 50], log_proportional([5, 50]), 400, 0, 1))


def test_jitter_boxes_bounded_and_valid() -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([[10, 20, 50, 40], [0, 0, 3, 2], [100, 100, 128, 128]], np.float32)
    out = jitter_boxes(np.repeat(boxes, 200, 0), rng, std=0.1, max_frac=0.2, img_size=128)
    side = np.repeat(boxes, 200, 0)[:, [2, 3, 2, 3]] - np.repeat(boxes, 200, 0)[:, [0, 1, 0, 1]]
    assert np.all(np.abs(out - np.repeat(boxes, 200, 0)) <= 0.2 * side + 1.0 + 1e-4)
    assert np.all(out[:, 2] > out[:, 0]) and np.all(out[:, 3] > out[:, 1])
    assert out.min() >= 0 and out.max() <= 128
    assert np.array_equal(jitter_boxes(boxes, rng, 0.0, 0.2, 128), boxes)


# --------------------------------------------------------------------------- loss


def test_loss_supervises_best_candidate_and_all_ious() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1.0
    good = torch.where(target > 0, 10.0, -10.0)[:, 0]
    logits = torch.stack([-good, good, torch.full_like(good, -10.0)], dim=1)
    logits.requires_grad_(True)
    iou_pred = torch.full((1, 3), 0.5, requires_grad=True)
    out = sameo_loss(logits, iou_pred, target, LossWeights(focal=20.0))
    assert int(out.chosen) == 1 and float(out.true_iou) == pytest.approx(1.0)
    assert torch.allclose(mask_iou(logits, target), torch.tensor([[0.0, 1.0, 0.0]]))
    out.total.sum().backward()
    assert logits.grad is not None and iou_pred.grad is not None
    assert logits.grad[:, [0, 2]].abs().sum() == 0  # only the chosen mask is supervised
    assert torch.all(iou_pred.grad != 0)  # every candidate's IoU is regressed
    assert float(out.dice) < 0.01


def test_loss_upsamples_like_the_predictor() -> None:
    """The default loss kernel draws the predictor's boundary: the mask the loss binarises at
    the loss resolution equals ``upscale_masks`` at that size; bilinear (the kernel before
    2026-12-02) differs on sharp logits."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 16, 16, generator=gen) * 8  # sharp, model-like logits
    target = torch.zeros(4, 1, 64, 64)
    app = upscale_masks(logits.reshape(-1, 16, 16).numpy(), (64, 64)).reshape(4, 3, 64, 64)
    for kernel in ("bicubic", "bilinear"):
        up = torch.nn.functional.interpolate(logits, (64, 64), mode=kernel, align_corners=False)
        agree = float(((up >= 0).numpy() == app).mean())
        loss = sameo_loss(logits, torch.zeros(4, 3), target, LossWeights(), kernel)
        expected = sameo_loss(up, torch.zeros(4, 3), target, LossWeights())
        assert torch.allclose(loss.total, expected.total)  # the loss sees `up`
        if kernel == "bicubic":
            assert agree > 0.999
        else:
            assert agree < 0.99
    with pytest.raises(InputError, match="loss_upsample"):
        TrainConfig(out=Path("x"), train=(DatasetSpec(Path("a.json")),), loss_upsample="area")


def test_lr_schedule() -> None:
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, 0.1) == pytest.approx(0.1, abs=1e-3)


# --------------------------------------------------------------------------- data + cache


def test_prepared_set_matches_annotations(world: dict[str, Path]) -> None:
    spec = DatasetSpec(world["train"])
    ps = prepare_dataset(spec, 128, 64, world["cache"])
    ds = ps.load_source()
    assert ps.num_images == len(ds.images) and ps.num_instances == len(ds.annotations)
    assert ps.dual.any() and not ps.dual.all()
    assert ps.pixels.shape == (ps.num_images, 3, 128, 128) and ps.pixels.dtype == np.float16
    i = 0
    ann = ds.annotations_of(int(ps.image_ids[i]))[0]
    x, y, w, h = ann.bbox
    h_img, w_img = ps.image_hw[i]
    expect = [x * 128 / w_img, y * 128 / h_img, (x + w) * 128 / w_img, (y + h) * 128 / h_img]
    assert np.allclose(ps.amodal_box[ps.first[i]], expect, atol=1e-3)
    cover = ps.amodal_mask[ps.first[i]].astype(np.float32) / 255
    assert cover.sum() * (h_img * w_img) / 64**2 == pytest.approx(ann.area, rel=0.02)
    assert np.all(ps.visible_mask[:] <= ps.amodal_mask[:].astype(np.int16) + 1)  # visible ⊆ amodal
    again = prepare_dataset(spec, 128, 64, world["cache"])
    assert again.directory == ps.directory  # reused, not rebuilt
    assert prepare_dataset(spec, 128, 32, world["cache"]).directory != ps.directory


def test_embedding_cache_exact_and_keyed(world: dict[str, Path], tmp_path: Path) -> None:
    model = seeded_tiny(0)
    ps = prepare_dataset(DatasetSpec(world["train2"]), 128, 64, world["cache"])
    cache = get_or_build(model, ps, tmp_path)
    assert cache.built and cache.embeddings.shape == (ps.num_images, 32, 8, 8)
    direct = encode_prepared(model, ps.pixels_tensor([0, 2]))
    assert torch.allclose(cache.get([0, 2]), direct, atol=1e-5)
    assert not get_or_build(model, ps, tmp_path).built  # reused
    fp = encoder_fingerprint(model)
    with torch.no_grad():
        model.image_encoder.neck[0].weight[0, 0] += 1e-3
    assert encoder_fingerprint(model) != fp
    other = get_or_build(model, ps, tmp_path)
    assert other.built and other.path != cache.path  # new weights, new key
    model.mask_decoder.iou_token.weight.data += 1  # the decoder does not key the cache
    assert encoder_fingerprint(model) == encoder_fingerprint(model)
    assert not get_or_build(model, ps, tmp_path).built


def test_make_batch_prompts_and_weights(world: dict[str, Path]) -> None:
    ps = prepare_dataset(DatasetSpec(world["train"]), 128, 64, world["cache"])
    cfg = tiny_cfg(world, world["root"] / "unused", amodal_box_prob=1.0, box_jitter=0.0)
    picks = np.array([[0, 0], [0, 1], [0, 2]])
    batch = make_batch([ps], picks, np.arange(3), cfg, 0)
    assert torch.all(batch.amodal_prompt)
    n0 = int(ps.count[0])
    assert torch.allclose(batch.boxes[:n0], torch.from_numpy(np.array(ps.amodal_box[:n0])))
    assert batch.weights.sum() == pytest.approx(1.0)
    assert batch.targets.shape[1:] == (1, 64, 64) and batch.targets.max() <= 1.0
    modal = make_batch([ps], picks, np.arange(3), cfg.replace(amodal_box_prob=0.0), 0)
    vis = np.asarray(ps.visible_area[:n0]) >= cfg.min_visible
    assert not torch.any(modal.amodal_prompt[:n0][torch.from_numpy(vis)])
    # same (seed, epoch, slot) -> same batch; the visible target differs from the amodal
    again = make_batch([ps], picks, np.arange(3), cfg, 0)
    assert torch.equal(batch.boxes, again.boxes) and torch.equal(batch.targets, again.targets)
    vis_t = make_batch([ps], picks, np.arange(3), cfg.replace(target="visible"), 0).targets
    assert torch.all(vis_t <= batch.targets + 1e-6) and not torch.equal(vis_t, batch.targets)


# --------------------------------------------------------------------------- loop


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).state_dict()


def test_decoder_training_learns_and_writes_run(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_cfg(
        world,
        out,
        train=[world["train"], world["train2"]],
        epochs=3,
        steps_per_epoch=8,
        lr=3e-3,
    )
    summary = fit(cfg)
    rows = list(summary["datasets"].values())
    assert rows[0]["p"] + rows[1]["p"] == pytest.approx(1.0)
    csv = (out / "metrics.csv").read_text().splitlines()
    assert len(csv) == 4 and "val_inst_mIoU_occluded" in csv[0] and "dice" in csv[0]
    losses = [float(r.split(",")[csv[0].split(",").index("loss")]) for r in csv[1:]]
    assert losses[-1] < losses[0]  # it learns
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    start, last = seeded_tiny(0).state_dict(), _state(out / "last.pt")
    model = load_model(out / "last.pt")
    assert model.has_modal_decoder
    for k, v in last.items():
        if k.startswith(("image_encoder.", "prompt_encoder.")):
            assert torch.equal(v, start[k]), k  # frozen
        elif k.startswith("modal_decoder."):
            assert torch.equal(v, start["mask_decoder." + k.removeprefix("modal_decoder.")])
    decoder_keys = [k for k in last if k.startswith("mask_decoder.")]
    assert any(not torch.equal(last[k], start[k]) for k in decoder_keys)
    assert (out / "best.pt").is_file() and (out / "summary.json").is_file()
    with pytest.raises(InputError, match="--resume"):
        fit(cfg)


def test_full_mode_trains_encoder_without_cache(world: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_cfg(
        world,
        tmp_path / "full",
        init=None,
        model="tiny",
        mode="full",
        target="visible",
        amodal_box_prob=0.0,
        keep_modal=False,
        epochs=1,
        steps_per_epoch=2,
        val=None,
    )
    fit(cfg)
    torch.manual_seed(cfg.seed)
    start = build_model("tiny").state_dict()
    last = _state(tmp_path / "full" / "last.pt")
    for key in ("image_encoder.patch_embed.proj.weight", "prompt_encoder.point_embeddings.weight"):
        assert not torch.equal(last[key], start[key]), key  # full mode trains the encoders
    assert not any(k.startswith("modal_decoder.") for k in last)


def test_progress_bar_counts_steps(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit(tiny_cfg(world, tmp_path / "bar", epochs=1, steps_per_epoch=3, val=None, progress=True))
    bars = capsys.readouterr().err.replace("\r", "\n")
    assert "epoch 1/1: 100%" in bars and "3/3" in bars  # the step bar advances to its total


def test_resume_continues_exactly(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = {"epochs": 2, "steps_per_epoch": 4, "save_every": 2, "val": None}
    fit(tiny_cfg(world, tmp_path / "straight", **kw))
    calls = {"n": 0}
    real_step = trainer_mod.train_step

    def dying_step(*args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 7:  # killed mid-epoch 2, after the step-6 save
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)  # type: ignore[arg-type]

    cfg = tiny_cfg(world, tmp_path / "killed", **kw)
    monkeypatch.setattr(trainer_mod, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    monkeypatch.setattr(trainer_mod, "train_step", real_step)
    assert not (tmp_path / "killed" / "summary.json").exists()
    fit(cfg, resume=True)
    a, b = _state(tmp_path / "straight" / "last.pt"), _state(tmp_path / "killed" / "last.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    rows_a = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()
    rows_b = (tmp_path / "killed" / "metrics.csv").read_text().splitlines()
    loss_col = rows_a[0].split(",").index("loss")
    assert [r.split(",")[loss_col] for r in rows_a] == [r.split(",")[loss_col] for r in rows_b]
    with pytest.raises(InputError, match="differs"):
        fit(cfg.replace(lr=0.5), resume=True)


def test_resume_from_a_corrupt_state_is_a_clear_error(
    world: dict[str, Path], tmp_path: Path
) -> None:
    cfg = tiny_cfg(world, tmp_path / "run", epochs=1, steps_per_epoch=1, val=None)
    cfg.out.mkdir(parents=True)
    (cfg.out / trainer_mod.STATE_FILE).write_bytes(b"\x80\x02garbage" * 64)
    with pytest.raises(InputError, match=trainer_mod.STATE_FILE):
        fit(cfg, resume=True)


def test_ddp_two_gloo_processes_match_single_process(
    world: dict[str, Path], tmp_path: Path
) -> None:
    kw = {"epochs": 1, "steps_per_epoch": 4, "val": None, "threads": 1}
    single = tiny_cfg(world, tmp_path / "single", **kw)
    fit(single)
    ddp = tiny_cfg(world, tmp_path / "ddp", **kw)
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(ddp.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "edge_sameo.train", "fit", "--config", str(cfg_path)]
    proc = subprocess.run(
        cmd, cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    a, b = _state(tmp_path / "single" / "last.pt"), _state(tmp_path / "ddp" / "last.pt")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 2e-4, worst  # Adam amplifies float-order noise on ~0 gradients a little
    one = json.loads((tmp_path / "single" / "summary.json").read_text())["final"]
    assert summary["final"]["loss"] == pytest.approx(one["loss"], rel=1e-5)


# --------------------------------------------------------------------------- export + CLI


def test_export_sameo_decoder_and_onnx(world: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(tiny_cfg(world, run, epochs=1, steps_per_epoch=2, val=None))
    out = tmp_path / "export"
    first = export_trained(TrainExportConfig(run / "last.pt", out, check=False))
    assert first.encoder_changed is None
    obj = torch.load(out / SAMEO_FILE, weights_only=True)
    assert set(obj) >= {"decoder", "config"}
    assert not any(k.startswith("mask_decoder.") for k in obj["decoder"])  # SAMEO keys
    # load_model applies the SAMEO decoder over the base; base decoder -> modal head
    model = load_model(out / SAMEO_FILE, base=world["init"])
    trained = load_model(run / "last.pt")
    for k, v in trained.mask_decoder.state_dict().items():
        assert torch.equal(model.mask_decoder.state_dict()[k], v)
    assert model.modal_decoder is not None
    sha = ExportContract.read(out / "onnx").sha256
    # a decoder fine-tuned further over the same encoder: encoder.onnx is unchanged
    run2 = tiny_cfg(world, tmp_path / "run2", init=run / "last.pt", val=None, seed=5)
    fit(run2.replace(epochs=1, steps_per_epoch=2))
    second = export_trained(TrainExportConfig(tmp_path / "run2" / "last.pt", out, check=False))
    sha2 = ExportContract.read(out / "onnx").sha256
    assert second.encoder_changed is False
    assert sha2["encoder.onnx"] == sha["encoder.onnx"]
    assert sha2["decoder.onnx"] != sha["decoder.onnx"]


def test_cli_fit_and_errors(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_cfg(world, tmp_path / "cli", epochs=1, steps_per_epoch=1, val=None)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert train_main(["fit", "--config", str(path), "--lr", "1e-4", "--no-progress"]) == 0
    saved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert saved["lr"] == pytest.approx(1e-4)
    assert train_main(["fit", "--config", str(path), "--set", "nope=1"]) == 2
    assert "unknown training config keys: nope" in capsys.readouterr().err
    import argparse

    from edge_sameo.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers())
    args = parser.parse_args(["train", "export", "--checkpoint", "x.pt", "--out", "o"])
    assert args.func is train_command.run and args.train_command == "export"


def test_bench_cache_same_numbers(world: dict[str, Path], tmp_path: Path) -> None:
    from edge_sameo.train.bench import cache_speedup

    figures = cache_speedup(tiny_cfg(world, tmp_path / "bench", val=None), steps=3, warmup=1)
    assert figures["cache_steps_per_s"] > 0 and figures["encode_steps_per_s"] > 0
    # training from the cache is the same computation as encoding every step
    assert figures["max_weight_diff"] < 1e-4


# --------------------------------------------------------------------------- nano recipe


def test_nano_recipe_end_to_end_then_warm_start(tmp_path: Path) -> None:
    from edge_sameo.train.card import render as render_card
    from edge_sameo.train.nano import run_recipe
    from tests.conftest import tiny_nano_recipe

    recipe = tiny_nano_recipe(tmp_path / "nano")
    result = run_recipe(recipe)
    first = load_model(recipe.out / "nano.pt")
    assert first.modal_decoder is not None and result["warm_start"] is None
    for key in ("amodal_head_modal_boxes", "amodal_head_amodal_boxes", "modal_head_modal_boxes"):
        assert 0.0 <= result["test"][key]["inst_mIoU"] <= 1.0, key
    assert result["test"]["instances"] > 0
    assert json.loads((recipe.out / "metrics.json").read_text())["test"] == result["test"]

    # Warm start: stage 1 starts from the first model's encoder and modal decoder.
    warm = recipe.replace(out=tmp_path / "warm", warm_start=recipe.out / "nano.pt")
    run_recipe(warm)
    start = load_model(warm.warm_start_model)
    assert start.modal_decoder is None  # one decoder: the one stage 1 trained
    ref_dec, got_dec = first.modal_decoder.state_dict(), start.mask_decoder.state_dict()
    assert all(torch.equal(ref_dec[k], got_dec[k]) for k in ref_dec)
    ref_enc, got_enc = first.image_encoder.state_dict(), start.image_encoder.state_dict()
    assert all(torch.equal(ref_enc[k], got_enc[k]) for k in ref_enc)
    metrics = json.loads((warm.out / "metrics.json").read_text())
    assert Path(metrics["stage1"]["config"]["init"]) == warm.warm_start_model
    card = render_card(metrics)
    assert f"--set warm_start={recipe.out / 'nano.pt'}" in card and "Quality bars" in card
    assert "from random weights" in render_card(result)
    assert "\n* a note on the data\n" in render_card({**result, "notes": ["a note on the data"]})
    assert load_model(warm.out / "nano.pt").modal_decoder is not None

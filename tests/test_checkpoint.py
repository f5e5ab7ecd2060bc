from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sameo import build_model, load_model, save_model
from edge_sameo.errors import CheckpointError
from edge_sameo.modeling import EfficientSam
from tests.conftest import seeded_tiny


def same_weights(a: EfficientSam, b: EfficientSam) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def decoder_state(model: EfficientSam, prefix: bool) -> dict[str, torch.Tensor]:
    return {
        (f"mask_decoder.{k}" if prefix else k): v
        for k, v in model.mask_decoder.state_dict().items()
    }


def test_original_format(tiny_model: EfficientSam, tiny_checkpoint: Path) -> None:
    loaded = load_model(tiny_checkpoint)
    assert loaded.config.name == "tiny"
    assert same_weights(loaded, tiny_model)
    assert not loaded.training


def test_original_vitt_format_recognised(tmp_path: Path, seeded_vitt: EfficientSam) -> None:
    path = tmp_path / "efficient_sam_vitt.pt"
    torch.save({"model": seeded_vitt.state_dict()}, path)
    loaded = load_model(path)
    assert loaded.config.name == "vitt"
    assert same_weights(loaded, seeded_vitt)


def test_bare_state_dict_is_accepted(tmp_path: Path, tiny_model: EfficientSam) -> None:
    path = tmp_path / "bare.pt"
    torch.save(tiny_model.state_dict(), path)
    assert same_weights(load_model(path), tiny_model)


def test_dual_decoder_model_roundtrip(tmp_path: Path, tiny_model: EfficientSam) -> None:
    dual = build_model("tiny", modal_decoder=True)
    path = tmp_path / "dual.pt"
    save_model(dual, path)
    loaded = load_model(path)
    assert loaded.has_modal_decoder and same_weights(loaded, dual)
    assert not tiny_model.has_modal_decoder


def test_edge_sameo_format_roundtrip(tmp_path: Path, tiny_model: EfficientSam) -> None:
    path = tmp_path / "own.pt"
    save_model(tiny_model, path, meta={"note": "test"})
    obj = torch.load(path, weights_only=True)
    assert obj["format"] == "edge-sameo" and obj["meta"] == {"note": "test"}
    assert same_weights(load_model(path), tiny_model)


@pytest.mark.parametrize("prefix", [False, True])
def test_sameo_decoder_over_base(
    tmp_path: Path, tiny_checkpoint: Path, tiny_model: EfficientSam, prefix: bool
) -> None:
    tuned = seeded_tiny(seed=7)
    path = tmp_path / "sameo.pt"
    torch.save({"decoder": decoder_state(tuned, prefix)}, path)
    loaded = load_model(path, base=tiny_checkpoint)
    assert loaded.has_modal_decoder
    base_sd, tuned_sd = tiny_model.state_dict(), tuned.state_dict()
    for k, v in loaded.state_dict().items():
        if k.startswith("modal_decoder."):
            # the base's original decoder is kept as the modal head
            assert torch.equal(v, base_sd[k.replace("modal_decoder.", "mask_decoder.", 1)]), k
        else:
            source = tuned_sd if k.startswith("mask_decoder.") else base_sd
            assert torch.equal(v, source[k]), k
    # a model object works as base too
    assert same_weights(load_model(path, base=tiny_model), loaded)


def test_sameo_with_encoder_section(tmp_path: Path, tiny_model: EfficientSam) -> None:
    tuned = seeded_tiny(seed=9)
    path = tmp_path / "sameo_enc.pt"
    torch.save(
        {
            "decoder": decoder_state(tuned, False),
            "encoder": tuned.image_encoder.state_dict(),
        },
        path,
    )
    loaded = load_model(path, base=tiny_model)
    sd = loaded.state_dict()
    assert torch.equal(sd["image_encoder.pos_embed"], tuned.image_encoder.pos_embed)
    assert torch.equal(
        sd["prompt_encoder.invalid_points.weight"], tiny_model.prompt_encoder.invalid_points.weight
    )


def test_sameo_complete_without_base(tmp_path: Path) -> None:
    tuned = seeded_tiny(seed=5)
    path = tmp_path / "sameo_full.pt"
    torch.save(
        {
            "decoder": decoder_state(tuned, False),
            "encoder": tuned.image_encoder.state_dict(),
            "prompt_encoder": tuned.prompt_encoder.state_dict(),
        },
        path,
    )
    assert same_weights(load_model(path), tuned)


def test_sameo_without_base_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "sameo.pt"
    torch.save({"decoder": decoder_state(seeded_tiny(), False)}, path)
    with pytest.raises(CheckpointError, match=r"sameo\.pt.*pass base="):
        load_model(path)


def test_sameo_decoder_of_other_size_rejected(tmp_path: Path, tiny_model: EfficientSam) -> None:
    path = tmp_path / "sameo.pt"
    with torch.device("meta"):
        vitt = build_model("vitt")
    state = {k: torch.zeros(v.shape) for k, v in vitt.mask_decoder.state_dict().items()}
    torch.save({"decoder": state}, path)
    with pytest.raises(CheckpointError, match=r"'decoder' does not fit the base model"):
        load_model(path, base=tiny_model)


class NotWeights:
    """Stands in for a pickled model class such as ultralytics' DetectionModel."""

    def __init__(self) -> None:
        self.x = 1


class Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "yolo_like.pt"
    torch.save({"model": NotWeights(), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"yolo_like\.pt.*pickled Python objects"):
        load_model(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoint_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Exploit(str(marker))}, f)
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        load_model(path)
    assert not marker.exists()


def test_malicious_zip_checkpoint_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned_zip"
    path = tmp_path / "evil_zip.pt"
    torch.save({"model": Exploit(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path)
    assert not marker.exists()


def test_random_bytes(tmp_path: Path) -> None:
    # Random bytes fail in many places of torch's unpickler (IndexError, KeyError, ...):
    # every one must come out as a CheckpointError naming the file.
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.pt"
    for size in (1, 7, 64, 4096) * 50:
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError, match=r"noise\.pt"):
            load_model(path)
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=r"noise\.pt"):
        load_model(path)


def test_truncated_file(tmp_path: Path, tiny_checkpoint: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt"):
        load_model(path)


def test_wrong_shapes(tmp_path: Path, tiny_model: EfficientSam) -> None:
    state = tiny_model.state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 7)
    path = tmp_path / "wrong.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"wrong\.pt.*no known EfficientSAM config"):
        load_model(path)
    save_model(tiny_model, path)
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["mask_decoder.iou_token.weight"] = torch.zeros(1, 7)
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=r"iou_token.weight has shape \(1, 7\), expected"):
        load_model(path)


@pytest.mark.parametrize(
    "obj, message",
    [
        (torch.zeros(3), "expected a dict checkpoint"),
        ({"epoch": 1, "optimizer": {}}, "not an EfficientSAM/SAMEO/edge-sameo checkpoint"),
        ({"format": "edge-sameo", "version": 99}, "version 99"),
        ({"decoder": [1, 2]}, "not a state_dict"),
    ],
)
def test_other_content_rejected(tmp_path: Path, obj: object, message: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path, base=seeded_tiny())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")


def test_state_dict_digest_covers_names_dtypes_and_shapes() -> None:
    """A state_dict's digest changes with a key, a dtype or a shape even where the bytes are
    the same; plain tensors are hashed by their bytes alone (the parity vectors' rule);
    bfloat16 and 0-d tensors hash too (numpy has no bfloat16)."""
    import hashlib

    from edge_sameo.checkpoint import state_dict_digest

    t = torch.arange(6, dtype=torch.float32)
    base = state_dict_digest({"a": t})
    assert state_dict_digest({"a": t.clone()}) == base
    assert state_dict_digest({"b": t}) != base
    assert state_dict_digest({"a": t.view(2, 3)}) != base
    assert state_dict_digest({"a": t.view(torch.int32)}) != base  # same bytes, other dtype
    assert state_dict_digest({"a": t}, header="config") != base
    assert (
        state_dict_digest([t, t])
        == hashlib.sha256(t.numpy().astype("<f4").tobytes() * 2).hexdigest()
    )
    odd = {"bf16": t.to(torch.bfloat16), "scalar": torch.tensor(2.0), "empty": torch.zeros(0)}
    assert state_dict_digest(odd) != state_dict_digest({**odd, "scalar": torch.tensor(3.0)})

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from edge_sameo import CONFIGS, build_model
from edge_sameo.modeling import EfficientSam
from edge_sameo.seeded import manifest_of, seeded_state_dict

DATA = Path(__file__).parent / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_manifest(variant: str) -> list[tuple[str, tuple[int, ...]]]:
    """The original checkpoint's ordered [(key, shape)] (copied from shared/reference)."""
    return [
        (k, tuple(s))
        for k, s in json.loads((DATA / f"efficientsam_{variant}_keys.json").read_text())
    ]


@pytest.fixture(scope="session")
def reference_vectors() -> dict[str, np.ndarray]:
    with np.load(DATA / "efficientsam_vitt_seed0.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="session")
def seeded_vitt() -> EfficientSam:
    model = build_model("vitt")
    model.load_state_dict(seeded_state_dict(reference_manifest("vitt"), seed=0))
    return model


def seeded_tiny(seed: int = 0, modal_decoder: bool = False, **config: Any) -> EfficientSam:
    """The tiny model with seeded weights; ``config`` overrides fields of its config
    (e.g. ``decoder_depth=2``)."""
    model = build_model(dataclasses.replace(CONFIGS["tiny"], **config), modal_decoder=modal_decoder)
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=seed))
    return model


#: Box prompts (XYXY pixels) of the 96×128 reference images for the refiner tests.
REFINER_BOXES = np.array([[5, 6, 60, 70], [20, 10, 120, 90], [0, 0, 50, 40]], np.float32)


def refined_tiny(seed: int = 0, occluders: bool = False, mirror: bool = False) -> EfficientSam:
    """The tiny model with a modal decoder and a small refiner (with the occluder channel
    when ``occluders`` and the mirror average when ``mirror``, as the bundled one) whose
    logits are standardised on the crops of a reference image (a random refiner's logits
    barely vary, so its masks are all or nothing): masks with boundaries, comparable pixel
    by pixel."""
    from edge_sameo.backends.recording import RecordingBackend
    from edge_sameo.backends.torch_backend import TorchBackend
    from edge_sameo.predictor import AmodalPredictor
    from edge_sameo.seeded import reference_image
    from tests.test_refiner import SMALL, with_refiner

    cfg = dataclasses.replace(SMALL, occluders=occluders, mirror=mirror)
    model = with_refiner(seeded_tiny(seed), cfg)
    assert model.refiner is not None
    recorder = RecordingBackend(TorchBackend(model, "fp32", "cpu"))
    predictor = AmodalPredictor(recorder)
    predictor.set_image(reference_image(96, 128, seed=3))
    predictor.predict(REFINER_BOXES)
    assert recorder.crops is not None
    with torch.no_grad():
        out = model.refiner(torch.from_numpy(recorder.crops)).transpose(0, 1).flatten(1)
        centre, spread = out.median(dim=1).values, out.std(dim=1)
        head = model.refiner.head
        head.weight /= spread.view(-1, 1, 1, 1)
        head.bias.copy_((head.bias - centre) / spread)
    return model


@pytest.fixture()
def tiny_model() -> EfficientSam:
    return seeded_tiny()


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path, tiny_model: EfficientSam) -> Path:
    path = tmp_path / "tiny.pt"
    torch.save({"model": tiny_model.state_dict()}, path)
    return path


@pytest.fixture()
def rgb_image() -> np.ndarray:
    from edge_sameo.seeded import reference_image

    return reference_image(96, 128, seed=3)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exports made on the fly go to a temporary cache, never the user's home."""
    monkeypatch.setenv("EDGE_SAMEO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_AUTOINSTALL", "False")


def tiny_nano_recipe(out: Path, **changes: object) -> Any:
    """The nano recipe shrunk to seconds: a tiny model, three training scenes of 128×96."""
    from edge_sameo.train.nano import NanoRecipe

    tiny_stage = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "warmup_steps": 1}
    fields: dict[str, Any] = {
        "out": out,
        "synth": {"size": (128, 96), "objects": (2, 3), "clutter": (0, 2)},
        "train_count": 3,
        "val_count": 1,
        "test_count": 2,
        "progress": False,
        "stage1": {**tiny_stage, "model": "tiny"},
        "stage2": tiny_stage,
    }
    return NanoRecipe(**{**fields, **changes})

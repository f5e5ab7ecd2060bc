from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from edge_sameo import build_model
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


def seeded_tiny(seed: int = 0) -> EfficientSam:
    model = build_model("tiny")
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=seed))
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

"""benchmarks/second_world.py: an evaluation-only world, reproducible, exact and independent
of the first world's code."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import BENCHMARKS

from edge_sameo.data import load_amodal_coco

SIZE = (192, 144)


@pytest.fixture(scope="module")
def world() -> ModuleType:
    """The script as a module, registered in ``sys.modules`` (its dataclasses need that)."""
    name = "second_world"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def written(world: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world.generate_second_world(tmp_path_factory.mktemp("w2"), 6, 5, SIZE)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.*"))}


def test_a_seed_gives_the_same_files_through_the_api_and_the_cli(
    world: ModuleType, written: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world.main(["--out", str(tmp_path / "a"), "--count", "6", "--seed", "5", "--size", "192x144"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "a" / "annotations.json")
    assert _files(tmp_path / "a") == _files(written.parent)
    shorter = world.generate_second_world(tmp_path / "b", 3, 5, SIZE)
    assert shorter.parent.joinpath("images/000002.png").read_bytes() == (
        written.parent.joinpath("images/000002.png").read_bytes()
    )
    other = world.generate_second_world(tmp_path / "c", 1, 6, SIZE)
    assert other.parent.joinpath("images/000000.png").read_bytes() != (
        written.parent.joinpath("images/000000.png").read_bytes()
    )


def test_masks_are_exact_and_occlusion_spans_its_range(world: ModuleType) -> None:
    occlusions: list[float] = []
    occluder_scenes = 0
    for i in range(20):
        layout = world.compose_world_scene(np.random.default_rng([3, i]), SIZE)
        scene, duals = world.world_scene_with_duals(layout)
        assert scene.image.shape == (SIZE[1], SIZE[0], 3) and scene.image.dtype == np.uint8
        assert 2 <= len(scene.instances) <= 5
        occluder_scenes += bool(scene.occluders)
        fulls = [layer.full(*SIZE) for layer in layout.layers]
        for n, inst in enumerate(scene.instances):
            assert inst.amodal.any()
            assert not np.any(inst.visible & ~inst.amodal)
            assert inst.track_id == n + 1 and inst.depth == n
            in_front = np.zeros(inst.amodal.shape, bool)
            for full in fulls[n + 1 :]:
                in_front |= full
            np.testing.assert_array_equal(inst.visible, inst.amodal & ~in_front)
            occlusions.append(inst.occlusion_rate)
        for dual, track in duals:
            (shown,) = [d for d in dual.instances if d.track_id == track]
            (orig,) = [d for d in scene.instances if d.track_id == track]
            assert orig.occlusion_rate > 0.05
            np.testing.assert_array_equal(shown.amodal, orig.amodal)
            np.testing.assert_array_equal(shown.visible, shown.amodal)
    assert min(occlusions) == 0.0
    assert max(occlusions) > 0.3
    assert np.mean(np.array(occlusions) > 0.1) > 0.2
    assert 0 < occluder_scenes < 20


def test_the_set_loads_and_prepares_for_training(
    world: ModuleType, written: Path, tmp_path: Path
) -> None:
    from edge_sameo.train.config import DatasetSpec
    from edge_sameo.train.data import prepare_dataset

    ds = load_amodal_coco(written)
    assert [c["name"] for c in ds.categories] == list(world.CLASSES)
    scenes = [img for img in ds.images if img.dual_of is None]
    duals = [img for img in ds.images if img.dual_of is not None]
    assert len(scenes) == 6
    assert len(ds.images) == len(list((written.parent / "images").glob("*.png")))
    assert sum(len(ds.annotations_of(img.id)) for img in ds.images) == len(ds.annotations)
    for img in ds.images:
        assert (img.width, img.height) == SIZE
        assert ds.load_image(img.id).shape == (SIZE[1], SIZE[0], 3)
        assert 1 <= len(ds.annotations_of(img.id)) <= 5
    for img in duals:
        assert img.dual_of is not None and ds.image(img.dual_of).dual_of is None
        (shown,) = [
            a for a in ds.annotations_of(img.id) if a.track_id == img.extra["dual_track_id"]
        ]
        assert shown.occlusion_rate == 0.0
    for ann in ds.annotations:
        assert not np.any(ann.visible_mask() & ~ann.amodal_mask())
        assert 1 <= ann.category_id <= len(world.CLASSES)
    prepared = prepare_dataset(DatasetSpec(written, name="w2"), 64, 16, tmp_path / "cache")
    assert prepared.num_images == len(ds.images)
    assert prepared.num_instances == len(ds.annotations)
    assert int(prepared.dual.sum()) == len(duals)


def test_the_module_never_uses_the_first_world() -> None:
    """Checked on the source: ``edge_sameo.data``'s package ``__init__`` imports the first
    world itself, so ``sys.modules`` would hold it whatever this module imports."""
    tree = ast.parse((BENCHMARKS / "second_world.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            imported.add(node.module)
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            pytest.fail("dynamic import in second_world.py")
    assert not any(name.startswith("edge_sameo.data.synth") for name in imported)
    ours = {name for name in imported if name.startswith("edge_sameo")}
    # only the COCO-amodal writers: the format is shared, the world is not
    assert ours == {
        "edge_sameo.data.coco_amodal",
        "edge_sameo.data.coco_amodal.write_amodal_coco",
        "edge_sameo.data.generate",
        "edge_sameo.data.generate.scene_annotations",
        "edge_sameo.data.generate.write_png",
    }

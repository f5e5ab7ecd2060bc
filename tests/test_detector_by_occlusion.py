"""benchmarks/detector_by_occlusion.py: which objects it scores, and how it matches boxes."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark("detector_by_occlusion")


def test_still_scenes_with_pillars_name_the_pillar(script: ModuleType) -> None:
    plain = list(script._scenes(9000, 12, False))
    mixed = list(script._scenes(9000, 12, False, 0.5))
    assert all(ids == set() for _, ids in plain)
    with_pillar = [i for i, (_, ids) in enumerate(mixed) if ids]
    assert 0 < len(with_pillar) < 12
    for i, (scene, ids) in enumerate(mixed):
        extra = len(scene.instances) - len(plain[i][0].instances)
        assert extra == (1 if i in with_pillar else 0)
        if ids:
            (pid,) = ids
            pillar = next(inst for inst in scene.instances if inst.track_id == pid)
            assert pillar.depth == max(inst.depth for inst in scene.instances)
            np.testing.assert_array_equal(pillar.visible, pillar.amodal)
        else:
            np.testing.assert_array_equal(scene.image, plain[i][0].image)


def test_clip_reports_its_static_pillars(script: ModuleType) -> None:
    frames = list(script._scenes(2024, 3, True))
    ids = frames[0][1]
    assert ids and all(f[1] == ids for f in frames)


def test_match_is_one_to_one_highest_iou_first(script: ModuleType) -> None:
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    pred = np.array([[21, 21, 30, 30], [0, 0, 10, 11], [0, 0, 9, 10]], float)
    assert script.match(gt, pred) == {0: 1, 1: 0}
    assert script.match(gt, np.zeros((0, 4))) == {}


def test_pillars_with_video_is_a_usage_error(script: ModuleType) -> None:
    with pytest.raises(SystemExit) as exc:
        script.main(["--video", "--pillars", "0.3"])
    assert exc.value.code == 2


def test_pillar_height_bins(script: ModuleType) -> None:
    assert script.pillar_bin(0.45) == "0.00-0.55"
    assert script.pillar_bin(0.6) == "0.55-0.65"
    assert script.pillar_bin(0.76) == "0.72-1.00"
    assert script.pillar_bin(1.0) == "0.72-1.00"

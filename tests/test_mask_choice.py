"""benchmarks/mask_choice.py: candidate scoring is consistent with the app's own choice."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from conftest import load_benchmark, seeded_tiny

from edge_sameo.data import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark("mask_choice")


def test_summary_by_hand(script: ModuleType) -> None:
    # chosen IoU, candidates 0-2, chosen index
    rows = np.array([[0.5, 0.5, 0.9, 0.1, 0], [0.8, 0.2, 0.8, 0.3, 1]])
    s = script._summary(rows)
    assert s["count"] == 2
    assert s["chosen_by_iou_head"] == pytest.approx(0.65)
    assert s["candidate"] == pytest.approx([0.35, 0.85, 0.2])
    assert s["oracle_best_of_3"] == pytest.approx(0.85)
    assert s["chosen_histogram"] == [1, 1, 0]
    assert s["iou_head_picks_oracle"] == pytest.approx(0.5)
    assert script._summary(rows[:0]) == {"count": 0}


def test_report_on_a_small_set(script: ModuleType, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": seeded_tiny(0).state_dict()}, ckpt)
    data = generate_dataset(
        tmp_path / "set", 3, seed=5, cfg=SynthConfig(size=(128, 96), objects=(2, 3))
    )
    report = script.mask_choice(ckpt, data, "mask", "modal", 0.1, tmp_path / "cache")
    every, occ = report["all"], report["occluded"]
    assert every["count"] >= 6 and sum(every["chosen_histogram"]) == every["count"]
    assert occ["count"] <= every["count"]
    # The oracle bounds every fixed candidate and the IoU head's choice.
    assert every["oracle_best_of_3"] >= max(every["candidate"]) - 1e-12
    assert every["oracle_best_of_3"] >= every["chosen_by_iou_head"] - 1e-12
    # The IoU head's choice is the app's mask: the same figure as nano_per_class, which
    # scores the masks best_masks returns.
    app = load_benchmark("nano_per_class").per_class(
        ckpt, data, "mask", "modal", 1.0, tmp_path / "cache"
    )
    assert app["all"]["count"] == every["count"]
    assert every["chosen_by_iou_head"] == pytest.approx(app["all"]["mIoU"], abs=1e-9)

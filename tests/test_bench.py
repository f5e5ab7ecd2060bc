from __future__ import annotations

from pathlib import Path

import pytest

from edge_sameo.bench import BASELINE, BenchConfig, markdown_table, run_bench, write_report
from edge_sameo.seeded import reference_image
from tests.conftest import seeded_tiny


def test_bench_reports_every_stage_against_the_baseline(tmp_path: Path) -> None:
    cfg = BenchConfig(box_counts=(1, 3), iters=2, warmup=0)
    lines: list[str] = []
    report = run_bench(
        seeded_tiny(), reference_image(96, 128, 1), cfg, None, ["onnxruntime"], lines.append
    )
    names = [r["name"] for r in report["results"]]
    assert names[0] == BASELINE and "onnxruntime fp32" in names
    base, ort = report["results"][0], report["results"][names.index("onnxruntime fp32")]
    assert base["mask_iou"] == {1: 1.0, 3: 1.0}
    assert ort["mask_iou"][3] > 0.99 and ort["embedding_rel_err"] < 1e-4
    for r in report["results"]:
        assert r["encoder"]["p50_ms"] > 0 and r["peak_rss_mib"] > 0
        assert set(r["decoder"]) == {1, 3} and r["throughput_fps"][3] > 0
    assert report["speedup_vs_baseline"][BASELINE]["encoder"] == pytest.approx(1.0)
    table = markdown_table(report)
    assert table.count("\n") == len(names) + 1 and "onnxruntime fp32" in table
    paths = write_report(report, tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_bench_config_validation() -> None:
    with pytest.raises(ValueError):
        BenchConfig(box_counts=(0,))
    with pytest.raises(ValueError):
        BenchConfig(iters=0)


def test_bench_times_the_refiner_and_compares_final_masks(tmp_path: Path) -> None:
    from tests.conftest import refined_tiny

    cfg = BenchConfig(box_counts=(1, 3), iters=2, warmup=0)
    lines: list[str] = []
    report = run_bench(
        refined_tiny(), reference_image(96, 128, 3), cfg, None, ["onnxruntime fp32"], lines.append
    )
    names = [r["name"] for r in report["results"]]
    assert names == [BASELINE, "onnxruntime fp32"]
    for r in report["results"]:
        assert set(r["refiner"]) == {1, 3} and r["refiner"][3]["p50_ms"] > 0
        assert r["postprocess"][3]["p50_ms"] > 0
    # The predictor's final (refined) masks, compared with the baseline's.
    assert report["results"][1]["mask_iou"][3] > 0.99
    table = markdown_table(report)
    assert "decoder + refiner N=3 p50 ms" in table
    assert len(table.splitlines()[2].split(" + ")) == 3  # one "dec + ref" cell per box count
    assert all(p.is_file() for p in write_report(report, tmp_path))

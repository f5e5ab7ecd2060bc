from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend, DecoderOutput
from edge_sameo.backends.recording import RecordingBackend
from edge_sameo.backends.torch_backend import TorchBackend
from edge_sameo.bench import (
    BASELINE,
    FRAME_STAGES,
    ISA_FLAGS,
    BenchConfig,
    _peak_line,
    bench_boxes,
    compare_backends,
    compare_table,
    interleaved_frames,
    markdown_table,
    run_bench,
    run_compare,
    write_compare,
    write_report,
)
from edge_sameo.checkpoint import save_model
from edge_sameo.cli import main
from edge_sameo.engines.export import export_to
from edge_sameo.predictor import AmodalPredictor
from edge_sameo.seeded import reference_image
from tests.conftest import refined_tiny, seeded_tiny


def test_bench_reports_every_stage_against_the_baseline(tmp_path: Path) -> None:
    cfg = BenchConfig(box_counts=(1, 3), iters=2, warmup=0)
    lines: list[str] = []
    report = run_bench(
        seeded_tiny(),
        reference_image(96, 128, 1),
        cfg,
        None,
        ["onnxruntime"],
        lines.append,
        export=export_to,
    )
    names = [r["name"] for r in report["results"]]
    assert names[0] == BASELINE and "onnxruntime fp32" in names
    base, ort = report["results"][0], report["results"][names.index("onnxruntime fp32")]
    assert base["mask_iou"] == {1: 1.0, 3: 1.0}
    assert ort["mask_iou"][3] > 0.99 and ort["embedding_rel_err"] < 1e-4
    for r in report["results"]:
        assert r["encoder"]["p50_ms"] > 0 and r["rounds"] == 2
        assert np.isfinite(r["rss_added_mib"]) and r["encoder"]["spread_pct"] >= 0
        assert set(r["decoder"]) == {1, 3} and r["throughput_fps"][3] > 0
    assert report["speedup_vs_baseline"][BASELINE]["encoder"] == pytest.approx(1.0)
    table, peak = markdown_table(report).split("\n\npeak: ")
    assert table.count("\n") == len(names) + 1 and "onnxruntime fp32" in table
    # Achieved GFLOP/s from torch's FLOP count, against the CPU's nominal peak.
    assert report["flops"]["encoder"] > 0 and report["flops"]["decoder/3"] > 0
    assert report["peak"]["gflops"]["fp32"] > 0 and "GFLOP/s" in peak
    eff = report["efficiency"][BASELINE]
    assert eff["encoder"]["pct_of_peak"] > 0 and eff["decoder/3"]["gflops"] > 0
    # ... and against a GEMM measured in the same run (the peak's clock may not be turbo's).
    gemm = report["peak"]["gemm"]["fp32"]
    assert gemm > 0 and "measured GEMM" in peak
    share = 100 * eff["encoder"]["gflops"] / gemm
    assert eff["encoder"]["pct_of_gemm"] == pytest.approx(share) and "% GEMM" in table
    paths = write_report(report, tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_peak_line_names_the_clock_a_faster_gemm_implies() -> None:
    peak = {
        "ghz": 2.0,
        "cores": 2,
        "flops_per_cycle": {"fp32": 32, "bf16": 64},
        "gflops": {"fp32": 128.0, "bf16": 256.0},
        "gemm": {"fp32": 192.0, "bf16": 300.0},
    }
    line = _peak_line(peak)
    assert "measured GEMM (torch, 2048²): fp32 192, bf16 300 GFLOP/s" in line
    assert "≥ 3.00 GHz" in line  # 192 / (2 cores × 32 FLOP/cycle)
    peak["gemm"] = {"fp32": 100.0}
    assert "GHz:" not in _peak_line(peak) and "fp32 100 GFLOP/s" in _peak_line(peak)


def test_bench_config_validation() -> None:
    with pytest.raises(ValueError):
        BenchConfig(box_counts=(0,))
    with pytest.raises(ValueError):
        BenchConfig(iters=0)


def test_bench_times_the_refiner_and_compares_final_masks(tmp_path: Path) -> None:
    cfg = BenchConfig(box_counts=(1, 3), iters=2, warmup=0)
    lines: list[str] = []
    report = run_bench(
        refined_tiny(),
        reference_image(96, 128, 3),
        cfg,
        None,
        ["onnxruntime fp32"],
        lines.append,
        export=export_to,
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


class Logged(RecordingBackend):
    """Appends ``(tag, stage)`` to ``log`` on every encode and decode of ``inner``."""

    def __init__(self, inner: Backend, tag: str, log: list[tuple[str, str]]) -> None:
        super().__init__(inner)
        self.tag, self.log = tag, log

    def encode(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        self.log.append((self.tag, "encode"))
        return super().encode(pixels)

    def _decode(self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]) -> DecoderOutput:
        self.log.append((self.tag, "decode"))
        return super()._decode(embedding, boxes)


def test_bench_takes_the_runtimes_rounds_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, str]] = []
    model = seeded_tiny()

    def runtime(tag: str) -> Any:
        return lambda: Logged(TorchBackend(model, "fp32", "cpu", "explicit"), tag, log)

    monkeypatch.setattr(
        "edge_sameo.bench.candidate_runtimes",
        lambda *a, **k: [(BASELINE, runtime("a")), ("other", runtime("b"))],
    )
    cfg = BenchConfig(box_counts=(2,), iters=5, warmup=1)
    report = run_bench(model, reference_image(96, 128, 1), cfg, progress=lambda _: None)
    encodes = "".join(tag for tag, stage in log if stage == "encode")
    # Set-up with a warm-up pass each, the FLOP count on the baseline, then five rounds,
    # the order turning every round.
    assert encodes == "ab" + "a" + "ab" + "ba" + "ab" + "ba" + "ab"
    assert [r["rounds"] for r in report["results"]] == [5, 5]
    assert report["results"][1]["mask_iou"][2] == 1.0  # the same model on both


def test_compare_reports_both_models_per_box_count(tmp_path: Path) -> None:
    cfg = BenchConfig(box_counts=(1, 3), iters=3, warmup=0)
    lines: list[str] = []
    report = run_compare(
        refined_tiny(),
        seeded_tiny(),
        reference_image(96, 128, 3),
        cfg,
        wanted=["torch-sdpa fp32"],
        progress=lines.append,
        labels=("new", "old"),
    )
    assert [r["name"] for r in report["results"]] == ["torch-sdpa fp32"] and not report["failed"]
    assert report["model"]["refiner"] and not report["baseline"]["refiner"]
    assert report["model"]["label"] == "new" and report["baseline"]["label"] == "old"
    assert set(report["machine"]["isa"]) <= set(ISA_FLAGS) and report["machine"]["cpu"]
    (r,) = report["results"]
    for n in (1, 3):
        ours, theirs = r["model"][n], r["baseline"][n]
        for stats in (ours, theirs):
            assert set(stats["stages"]) == set(FRAME_STAGES)
            assert 0 < stats["frame"]["p50_ms"] <= stats["frame"]["p95_ms"]
            assert 0 < stats["compute"]["p50_ms"] <= stats["frame"]["p50_ms"]
        assert ours["stages"]["refiner"] > 0 and theirs["stages"]["refiner"] == 0
        assert r["frame_ratio"][n] == pytest.approx(
            ours["frame"]["p50_ms"] / theirs["frame"]["p50_ms"]
        )
        assert r["compute_ratio"][n] == pytest.approx(
            ours["compute"]["p50_ms"] / theirs["compute"]["p50_ms"]
        )
    table = compare_table(report)
    assert len(table.splitlines()) == 2 + 2 and "torch-sdpa fp32 | 3 |" in table
    json_path, md_path = write_compare(report, tmp_path)
    saved = json.loads(json_path.read_text())
    assert saved["results"][0]["frame_ratio"]["3"] == pytest.approx(r["frame_ratio"][3])
    assert md_path.read_text() == compare_table(saved) + "\n"


def test_compare_takes_whole_frames_in_turn() -> None:
    log: list[tuple[str, str]] = []
    image = reference_image(96, 128, 3)
    predictors = [
        AmodalPredictor(Logged(TorchBackend(seeded_tiny(seed), "fp32", "cpu"), tag, log))
        for seed, tag in ((0, "A"), (1, "B"))
    ]
    frames = interleaved_frames(predictors, image, bench_boxes((96, 128), 2, 0), 3, 1)
    assert [len(f) for f in frames] == [3, 3]
    one_turn = [("A", "encode"), ("A", "decode"), ("B", "encode"), ("B", "decode")]
    assert log == one_turn * 4  # 1 warm-up + 3 timed frames each
    # compare_backends: the first factory is the model, each box count in turn too.
    log.clear()
    result = compare_backends(
        "torch fp32",
        lambda: Logged(TorchBackend(seeded_tiny(0), "fp32", "cpu"), "A", log),
        lambda: Logged(TorchBackend(seeded_tiny(1), "fp32", "cpu"), "B", log),
        image,
        BenchConfig(box_counts=(1, 2), iters=2, warmup=1),
    )
    assert log == one_turn * 6 and set(result.model) == set(result.baseline) == {1, 2}


def test_cli_bench_baseline_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new, old = tmp_path / "new.pt", tmp_path / "old.pt"
    save_model(refined_tiny(), new)
    save_model(seeded_tiny(), old)
    out = tmp_path / "bench"
    argv = ["bench", "--model", str(new), "--baseline", str(old), "--boxes", "6"]
    rc = main([*argv, "--only", "torch", "--iters", "2", "--warmup", "0", "--out-dir", str(out)])
    assert rc == 0
    report = json.loads((out / "compare.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names and all(n.startswith("torch") for n in names) and not (out / "bench.json").exists()
    assert all(set(r["frame_ratio"]) == {"6"} for r in report["results"])
    assert report["baseline"]["label"] == str(old)
    printed = capsys.readouterr().out
    assert "| runtime | N |" in printed and (out / "compare.md").read_text() in printed


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "checkpoint not found"), (b"garbage" * 100, "not a readable PyTorch checkpoint")],
)
def test_cli_bench_baseline_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    model, bad = tmp_path / "model.pt", tmp_path / "baseline.pt"
    save_model(seeded_tiny(), model)
    if content is not None:
        bad.write_bytes(content)
    argv = ["bench", "--model", str(model), "--baseline", str(bad), "--only", "torch"]
    assert main([*argv, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-sameo bench: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_bench_times_the_ultralytics_mobilesam_peer_in_the_same_rounds() -> None:
    cfg = BenchConfig(box_counts=(1, 2), iters=2, warmup=0)
    report = run_bench(
        seeded_tiny(),
        reference_image(96, 128, 1),
        cfg,
        wanted=["torch-sdpa fp32"],
        progress=lambda _: None,
        peers=["ultralytics-mobilesam"],
    )
    (peer,) = report["peers"]
    assert peer["name"].startswith("ultralytics MobileSAM")
    for n in (1, 2):
        frame = peer["stages"][f"frame/{n}"]
        assert frame["p50_ms"] > peer["stages"]["encoder"]["p50_ms"] > 0
        # ratio = the peer's frame over ours, for every runtime
        for r in report["results"]:
            mine = 1e3 / r["throughput_fps"][n]
            got = report["vs_peers"][r["name"]][peer["name"]][n]
            assert got == pytest.approx(frame["p50_ms"] / mine, rel=1e-6)
    assert f"× {peer['name']} N=2" in markdown_table(report)

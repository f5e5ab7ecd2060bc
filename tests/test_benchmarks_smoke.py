"""Every script in benchmarks/ runs as ``python benchmarks/<name>.py`` with edge_sameo installed:
``--help`` works, nothing edits ``sys.path``, and each one does a tiny real run whose output is
checked. A new script must be added to ``RUNS`` (the first test says so)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sameo import bundled

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py"))


def run_script(name: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    """Run ``benchmarks/<name>.py`` from ``cwd`` (not the checkout, so only the installed
    package is importable) and return its stdout; a failure shows its stderr."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def synth_speed(tmp: Path) -> None:
    out = run_script("synth_speed", "--count", "3", "--size", "160x120", cwd=tmp)
    rates = [float(line.split()[-2]) for line in out.splitlines() if line.endswith("/s")]
    assert len(rates) == 3 and all(r > 0 for r in rates)


def second_world(tmp: Path) -> None:
    run_script("second_world", "--out", "w2", "--count", "2", "--seed", "5", "--size", "160x120",
               cwd=tmp)  # fmt: skip
    coco = json.loads((tmp / "w2" / "annotations.json").read_text())
    assert coco["images"] and coco["annotations"]
    assert all((tmp / "w2" / im["file_name"]).is_file() for im in coco["images"])


def stream_fps(tmp: Path) -> None:
    run_script("stream_fps", "--frames", "4", "--detector", "gt", "--backend", "torch",
               "--write", "--rounds", "2", "--json", "fps.json", cwd=tmp)  # fmt: skip
    report = json.loads((tmp / "fps.json").read_text())
    for mode in ("sequential", "pipelined", "paced"):
        runs = report["runs"][mode]
        assert len(runs) == 2 and all(r["frames"] + r["dropped_frames"] == 4 for r in runs)
        assert report["medians"][mode]["steady_fps"] > 0
        assert (
            report["medians"][mode]["latency_p95_ms"] >= report["medians"][mode]["latency_p50_ms"]
        )
    for mode in ("sequential", "pipelined"):  # unpaced: every frame
        assert (tmp / "out" / "stream_fps" / f"{mode}.jsonl").read_text().count("\n") == 4
    assert report["ratio"] > 0


def demo_strip(tmp: Path) -> None:
    writer = cv2.VideoWriter(str(tmp / "v.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    run_script("demo_strip", "--video", "v.mp4", "--frames", "1,3", "--scale", "1",
               "--out", "strip.png", cwd=tmp)  # fmt: skip
    image = cv2.imread(str(tmp / "strip.png"))
    assert image.shape == (48, 2 * 64 + 4, 3)  # two frames and the white gap between them


def gpu_runbook(tmp: Path) -> None:
    run_script("gpu_runbook", "--config", "tiny", "--iters", "1", "--warmup", "0", "--no-trt",
               "--json", "gpu.json", cwd=tmp)  # fmt: skip
    rows = {
        (r["runtime"], r["precision"]): r
        for r in json.loads((tmp / "gpu.json").read_text())["rows"]
    }
    assert rows[("torch cpu", "fp32")]["status"] == "ok"
    onnx = rows[("onnxruntime cpu", "fp32")]
    assert onnx["status"] == "ok" and onnx["mask_iou_min"] > 0.99
    assert rows[("tensorrt", "fp16")]["status"].startswith("skipped")


def detector_by_occlusion(tmp: Path) -> None:
    run_script("detector_by_occlusion", "--weights", str(bundled.DETECTOR), "--count", "2",
               "--seed", "9000", "--json", "occ.json", cwd=tmp)  # fmt: skip
    report = json.loads((tmp / "occ.json").read_text())
    assert report["scenes"] == 2 and report["per_occlusion"]


def soak(tmp: Path) -> None:
    run_script("soak", "--minutes", "0.25", "--warmup-s", "2", "--sample-s", "1", "--cut-s", "0.5",
               "--reconnect-timeout", "3", "--backend", "torch", "--size", "320x240",
               "--json", "soak.json", cwd=tmp)  # fmt: skip
    row = json.loads((tmp / "soak.json").read_text())
    assert row["exit_code"] == 3 and row["gave_up"]  # the stream went away for good
    assert row["processed"] > 0 and row["unaccounted"] == 0
    assert row["served"] == row["processed"] + row["dropped"]
    assert row["rss_samples"]


def temporal_replay(tmp: Path) -> None:
    run_script("temporal_replay", "--seeds", "5", "--frames", "6", "--work", "w", "--json",
               "t.json", cwd=tmp)  # fmt: skip
    report = json.loads((tmp / "t.json").read_text())
    assert (tmp / "w" / "5" / "demo.jsonl").read_text().count("\n") == 6
    rows = report["settings"]
    assert set(rows) == {"off", "persistence 30", "persistence 30 + shape memory"}
    assert all(0 <= r["mean"]["AP50"] <= 1 for r in rows.values())


def as_avx2(tmp: Path) -> None:
    """The demo as on an AVX2-only CPU: ``auto`` picks fp32, the bundled detector is its INT8
    export, and it compiles (bf16, which OpenVINO would pick from this CPU's flags, has no
    AVX2 kernels and would fail)."""
    run_script("as_avx2", "demo", "--frames", "6", "--out-dir", "o", "--quiet", cwd=tmp)
    summary = json.loads((tmp / "o" / "demo_summary.json").read_text())
    assert summary["frames"] == 6 and summary["backend"] == "openvino fp32"
    assert summary["detector"] == "bundled YOLOv8n (INT8: this CPU has no AVX-512)"


#: One tiny real run per script; the ones that load models or start the app are ``slow``.
RUNS: dict[str, Callable[[Path], None]] = {
    "as_avx2": as_avx2,
    "synth_speed": synth_speed,
    "second_world": second_world,
    "demo_strip": demo_strip,
    "stream_fps": stream_fps,
    "gpu_runbook": gpu_runbook,
    "detector_by_occlusion": detector_by_occlusion,
    "soak": soak,
    "temporal_replay": temporal_replay,
}
SLOW = {"as_avx2", "stream_fps", "gpu_runbook", "detector_by_occlusion", "soak", "temporal_replay"}


def test_every_script_has_a_smoke_run() -> None:
    assert sorted(RUNS) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name: str, tmp_path: Path) -> None:
    assert "usage:" in run_script(name, "--help", cwd=tmp_path)


@pytest.mark.parametrize("name", SCRIPTS)
def test_no_sys_path_edits(name: str) -> None:
    """The scripts import edge_sameo as installed, never a checkout put on ``sys.path``."""
    tree = ast.parse((BENCHMARKS / f"{name}.py").read_text())
    edits = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert edits == []


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SCRIPTS],
)
def test_tiny_run(name: str, tmp_path: Path) -> None:
    RUNS[name](tmp_path)

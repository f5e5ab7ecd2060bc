"""The wheel works outside the repository: it carries the bundled models (found with
importlib.resources), claims no generic top-level import name, and ``edge-sameo demo``
runs from it in an unrelated folder, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (whl,) = out.glob("edge_sameo-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_layout(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"edge_sameo"}  # no `train`, `calib` or `engines` in site-packages
    for sub in ("train", "calib", "engines"):
        assert f"edge_sameo/{sub}/__init__.py" in names
    assert "edge_sameo/engines/trt_onnx_ops/trt10.1.tsv" in names
    # exactly the bundled models (no experiment folder that happens to lie beside them)
    ov = ("yolov8n_synth.xml", "yolov8n_synth.bin", "metadata.yaml")
    expected = {
        *(
            f"nano/{f}"
            for f in ("nano.pt", "nano_sameo_decoder.pt", "metrics.json", "MODEL_CARD.md")
        ),
        *(f"detector/{f}" for f in ("yolov8n_synth.pt", "metrics.json", "MODEL_CARD.md")),
        *(f"detector/yolov8n_synth_openvino_model/{f}" for f in ov),
        *(f"detector/yolov8n_synth_int8_openvino_model/{f}" for f in ov),
    }
    models = {n.removeprefix("edge_sameo/models/") for n in names if "/models/" in n}
    assert models == expected


@pytest.mark.slow
def test_demo_from_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    # The dependencies come from this environment; edge_sameo only from the wheel: its
    # folder comes first on the path and the repository is not on it.
    env = {**os.environ, "PYTHONPATH": str(target), "YOLO_OFFLINE": "1"}
    env["YOLO_AUTOINSTALL"] = "False"
    where = subprocess.run(
        [sys.executable, "-c", "import edge_sameo.bundled as b; print(b.__file__, b.NANO)"],
        cwd=work, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    module, nano = where.stdout.split()
    assert module.startswith(str(target)) and nano.startswith(str(target))
    run = subprocess.run(
        [sys.executable, "-m", "edge_sameo", "demo", "--frames", "4", "--out-dir", "out"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((work / "out" / "demo_summary.json").read_text())
    assert summary["frames"] == 4
    lines = (work / "out" / "demo.jsonl").read_text().splitlines()
    assert len(lines) == 4 and any(json.loads(line)["objects"] for line in lines)
    assert (work / "out" / "demo.mp4").stat().st_size > 0

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sameo.backends.cuda_memory import NoGpuError
from edge_sameo.cli import main
from edge_sameo.errors import EdgeSameoError, InputError, MissingDependencyError
from edge_sameo.io import write_image
from edge_sameo.masks import decode_rle


@pytest.fixture()
def image_file(tmp_path: Path, rgb_image: np.ndarray) -> Path:
    path = tmp_path / "img.png"
    write_image(path, rgb_image)
    return path


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_segment_writes_overlay_and_rle(
    tmp_path: Path, image_file: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, js = tmp_path / "o" / "overlay.png", tmp_path / "masks.json"
    rc = main(
        [
            "segment",
            str(image_file),
            "--checkpoint",
            str(tiny_checkpoint),
            "--box",
            "5,6,60,70",
            "--box",
            "120,90,20,10",
            "--out",
            str(out),
            "--json",
            str(js),
        ]
    )
    assert rc == 0
    overlay = cv2.imread(str(out))
    assert overlay.shape == (96, 128, 3)
    data = json.loads(js.read_text())
    assert (data["height"], data["width"]) == (96, 128)
    assert [m["box"] for m in data["masks"]] == [[5, 6, 60, 70], [20, 10, 120, 90]]
    for m in data["masks"]:
        mask = decode_rle(m["segmentation"])
        assert mask.shape == (96, 128) and int(mask.sum()) == m["area"]
    assert "box 1: score" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.__setitem__(1, "missing.png"), "image not found"),
        (lambda a: a.__setitem__(3, "missing.pt"), "checkpoint not found"),
        (lambda a: a.__setitem__(5, "1,2,3"), "--box expects x1,y1,x2,y2"),
        (lambda a: a.__setitem__(5, "10,10,10,50"), "zero area"),
        (lambda a: a.__setitem__(5, "nan,1,2,3"), "NaN"),
        (lambda a: a.__setitem__(7, "overlay.gifx"), "unsupported extension"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path,
    image_file: Path,
    tiny_checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: object,
    message: str,
) -> None:
    args = [
        "segment",
        str(image_file),
        "--checkpoint",
        str(tiny_checkpoint),
        "--box",
        "5,6,60,70",
        "--out",
        str(tmp_path / "o.png"),
    ]
    mutate(args)  # type: ignore[operator]
    with pytest.raises(SystemExit) if "--box expects" in message else _noop():
        rc = main(args)
        assert rc == 2
    assert message in one_line_error(capsys)


class _noop:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_corrupt_image_and_checkpoint(
    tmp_path: Path, image_file: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_img = tmp_path / "bad.png"
    bad_img.write_bytes(b"\x89PNG not really")
    rc = main(
        [
            "segment",
            str(bad_img),
            "--checkpoint",
            str(tiny_checkpoint),
            "--box",
            "1,1,9,9",
            "--out",
            str(tmp_path / "o.png"),
        ]
    )
    assert rc == 2 and "cannot read image" in one_line_error(capsys)
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"garbage" * 100)
    rc = main(
        [
            "segment",
            str(image_file),
            "--checkpoint",
            str(bad_ckpt),
            "--box",
            "1,1,9,9",
            "--out",
            str(tmp_path / "o.png"),
        ]
    )
    assert rc == 2 and "not a readable PyTorch checkpoint" in one_line_error(capsys)
    assert not (tmp_path / "o.png").exists()


def test_console_script_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_sameo",
            "segment",
            str(tmp_path / "none.png"),
            "--checkpoint",
            "x.pt",
            "--box",
            "1,1,2,2",
            "--out",
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"edge-sameo segment: error: image not found: {tmp_path / 'none.png'}"
    )


def test_demo_writes_video_jsonl_and_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_sameo import build_model, save_model
    from edge_sameo.seeded import manifest_of, seeded_state_dict

    model = build_model("tiny", modal_decoder=True)
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=0))
    save_model(model, tmp_path / "dual.pt")
    args = ["demo", "--out-dir", str(tmp_path / "out"), "--frames", "5", "--detector", "gt",
            "--sam", str(tmp_path / "dual.pt"), "--backend", "torch"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "FPS" in out and "mIoU_occ" in out
    summary = json.loads((tmp_path / "out" / "demo_summary.json").read_text())
    assert summary["frames"] == 5 and {"mIoU", "mIoU_occ", "baseline"} <= set(summary["accuracy"])
    assert len((tmp_path / "out" / "demo.jsonl").read_text().splitlines()) == 5
    assert (tmp_path / "out" / "demo.mp4").stat().st_size > 0


@pytest.mark.slow
def test_bundled_demo(tmp_path: Path) -> None:
    from edge_sameo import bundled

    if not (bundled.NANO.exists() and bundled.DETECTOR.exists()):
        pytest.skip("bundled models not present")
    assert main(["demo", "--out-dir", str(tmp_path), "--frames", "20"]) == 0
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["frames"] == 20 and summary["accuracy"]["mIoU"] is not None
    # set-up (the first frame) reported apart from the steady rate
    assert 0 < summary["first_frame_s"] < summary["wall_s"]
    assert summary["steady_fps"] == pytest.approx(
        19 / (summary["wall_s"] - summary["first_frame_s"]), rel=0.05
    )


def test_unexpected_error_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A runtime's own exception (not bad input) is one line and exit 1; the traceback
    only with EDGE_SAMEO_DEBUG=1."""
    import edge_sameo.commands.synth as synth_cmd

    def boom(args: object) -> int:
        raise RuntimeError("ORT: kernel failed\n  at node 17")

    monkeypatch.setattr(synth_cmd, "run_images", boom)
    monkeypatch.delenv("EDGE_SAMEO_DEBUG", raising=False)
    argv = ["synth", "images", "--out", "x", "--count", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unexpected error: RuntimeError: ORT: kernel failed at node 17" in err
    monkeypatch.setenv("EDGE_SAMEO_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(argv)


def fails_with(exc: Exception) -> Callable[..., int]:
    def fail(*args: object) -> int:
        raise exc

    return fail


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InputError("box 0 has zero area"), 2),
        (MissingDependencyError("tensorrt is not installed: pip install 'edge-sameo[trt]'"), 2),
        (NoGpuError("no CUDA GPU found: TensorRT needs an NVIDIA GPU"), 2),
        (FileNotFoundError(2, "No such file or directory", "x.png"), 2),
        (EdgeSameoError("INT8 calibration of encoder failed: no batches"), 1),
    ],
)
def test_exit_code_says_bad_usage_or_failure(
    exc: Exception,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bad usage or input (what the command line asked for cannot be done) exits 2; an
    error raised on purpose while running (an engine build, a calibration) exits 1; both
    one line headed by the command."""
    import edge_sameo.commands.synth as synth_cmd

    monkeypatch.setattr(synth_cmd, "run_images", fails_with(exc))
    monkeypatch.delenv("EDGE_SAMEO_DEBUG", raising=False)
    assert main(["synth", "images", "--out", "x", "--count", "1"]) == code
    assert one_line_error(capsys) == f"edge-sameo synth: error: {exc}"


def test_training_entries_handle_errors_as_the_cli_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m edge_sameo.train`` and the detector trainer's entry end as ``edge-sameo``
    does: a failure at run time or an unexpected exception is one line and exit 1."""
    import edge_sameo.train.cli as train_cli
    import edge_sameo.train.detector as train_detector

    monkeypatch.delenv("EDGE_SAMEO_DEBUG", raising=False)
    monkeypatch.setattr(train_cli, "run_nano", fails_with(EdgeSameoError("stage 2 diverged")))
    assert train_cli.main(["nano"]) == 1
    assert one_line_error(capsys) == "train nano: error: stage 2 diverged"
    oom = RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported later")
    monkeypatch.setattr(train_detector, "train_detector", fails_with(oom))
    assert train_detector.main(["--out", str(tmp_path)]) == 1
    assert one_line_error(capsys) == (
        "train.detector: unexpected error: RuntimeError: CUDA error: out of memory CUDA kernel "
        "errors might be reported later (EDGE_SAMEO_DEBUG=1 shows the traceback)"
    )

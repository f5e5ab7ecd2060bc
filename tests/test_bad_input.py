"""Bad-input corpus: every case exits 2 with one line on stderr and no
traceback, leaves every file in its folder as it was (a pre-existing output keeps its
content, nothing new is created), and no pickle in it ever runs its code."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from edge_sameo.cli import main
from edge_sameo.data import annotation_record, write_amodal_coco
from edge_sameo.io import write_image
from edge_sameo.masks import encode_rle

PREVIOUS = "previous results\n"


class Evil:
    """Pickles to a call of ``os.system`` that creates ``marker``: the file must never
    appear, whatever command opens the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class Case:
    """The folder a case runs in: its inputs, a pre-existing output, and the marker."""

    def __init__(self, root: Path, image: np.ndarray, checkpoint: Path) -> None:
        self.root = root
        self.marker = root / "MARKER"
        self.image = root / "img.png"
        write_image(self.image, image)
        self.ckpt = root / "tiny.pt"
        shutil.copy(checkpoint, self.ckpt)
        self.video = root / "clip.mp4"
        writer = cv2.VideoWriter(str(self.video), cv2.VideoWriter.fourcc(*"mp4v"), 10, (64, 48))
        for i in range(12):
            writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
        writer.release()
        self.keep = root / "keep.jsonl"  # an earlier run's output
        self.keep.write_text(PREVIOUS)
        self.boxes = root / "boxes.jsonl"  # a replay detector with no box: fast runs
        self.boxes.write_text("")

    def evil(self, name: str = "evil.pt", protocol: int = 2) -> Path:
        path = self.root / name
        torch.save({"model": Evil(self.marker)}, path, pickle_protocol=protocol)
        return path

    def p(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture()
def case(tmp_path: Path, rgb_image: np.ndarray, tiny_checkpoint: Path) -> Iterator[Case]:
    root = tmp_path / "case"
    root.mkdir()
    c = Case(root, rgb_image, tiny_checkpoint)
    yield c
    assert not c.marker.exists(), "a pickle ran code"


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def refused(argv: list[str], case: Case, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI in-process on a case: exit 2, one stderr line, no file changed."""
    before = snapshot(case.root)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert snapshot(case.root) == before, "an output was created or changed"
    assert case.keep.read_text() == PREVIOUS
    return err


def run_args(case: Case, *extra: str) -> list[str]:
    """``run`` on the synthetic source with the tiny checkpoint, keep.jsonl as output."""
    out = ["run", "--source", "synth:1", "--frames", "2", "--sam", str(case.ckpt),
           "--backend", "torch", "--detector", str(case.boxes),
           "--jsonl", str(case.keep)]  # fmt: skip
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def segment_args(case: Case, **changes: str) -> list[str]:
    opts = {"--checkpoint": str(case.ckpt), "--box": "5,6,60,70", "--out": case.p("o.png")}
    opts.update(changes)
    image = opts.pop("image", str(case.image))
    return ["segment", image, *[x for kv in opts.items() for x in kv]]


# --------------------------------------------------------------------------- 1. model files


def _onnx_with_metadata(path: Path, metadata: dict[str, str]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    for k, v in metadata.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def _code(case: Case) -> str:
    return f"__import__('os').system('touch {case.marker}')"


def test_evil_detector_pickle_never_runs(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    for protocol in (2, 4):  # GLOBAL and STACK_GLOBAL
        evil = case.evil(f"evil{protocol}.pt", protocol)
        err = refused(run_args(case, "--detector", str(evil)), case, capsys)
        assert "refused to load the detector" in err and "posix.system" in err
        assert "ONNX (.onnx), an OpenVINO folder or a TensorRT .engine" in err
    demo_out = case.root / "out"
    demo_out.mkdir()
    (demo_out / "demo.jsonl").write_text(PREVIOUS)
    err = refused(["demo", "--detector", str(evil), "--out-dir", str(demo_out)], case, capsys)
    assert "refused to load the detector" in err


def test_bundled_pt_detector_passes_the_check() -> None:
    from edge_sameo import bundled
    from edge_sameo.safety import check_detector_file

    bundled = bundled.DETECTOR_WEIGHTS
    if not bundled.exists():
        pytest.skip("bundled detector not present")
    check_detector_file(bundled)  # the real YOLOv8 checkpoint: allowed classes only


@pytest.mark.parametrize("how", ["layer called", "getattr"])
def test_pickle_tricks_with_allowed_names(
    case: Case, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """A layer class may be created empty, never called (its constructor may evaluate
    code); builtins such as getattr are not on the list at all."""
    import builtins

    class Trick:
        def __reduce__(self) -> tuple[Any, ...]:
            if how == "layer called":
                return (torch.nn.Sequential, ())
            return (builtins.getattr, (torch.nn.Sequential, "forward"))

    path = case.root / "trick.pt"
    torch.save({"model": Trick()}, path)
    err = refused(run_args(case, "--detector", str(path)), case, capsys)
    assert ("REDUCE" in err) if how == "layer called" else ("builtins.getattr" in err)


def test_evil_pickle_hidden_behind_a_clean_entry_of_the_same_name(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    """zipfile reads the last of two equal names, torch's reader may load the other: a
    file with duplicate entries is refused whatever the last one holds."""
    import warnings
    import zipfile

    evil = case.evil("evil_dup.pt", 2)
    clean = case.root / "clean.pt"
    torch.save({"x": torch.zeros(1)}, clean)
    with zipfile.ZipFile(evil) as z:
        (pkl,) = [n for n in z.namelist() if n.endswith("data.pkl")]
    with zipfile.ZipFile(clean) as z:
        harmless = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(evil, "a") as z:
            z.writestr(pkl, harmless)
    err = refused(run_args(case, "--detector", str(evil)), case, capsys)
    assert "two zip entries of the same name" in err


def test_code_in_detector_metadata(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_file = _onnx_with_metadata(case.root / "det.onnx", {"names": _code(case)})
    err = refused(run_args(case, "--detector", str(onnx_file)), case, capsys)
    assert "metadata 'names' is not a plain literal" in err
    folder = case.root / "det_openvino_model"
    folder.mkdir()
    (folder / "det.xml").write_text("<net/>")
    (folder / "metadata.yaml").write_text(f'imgsz: "{_code(case)}"\n')
    err = refused(run_args(case, "--detector", str(folder)), case, capsys)
    assert "metadata 'imgsz'" in err
    header = json.dumps({"names": _code(case)}).encode()
    engine = case.root / "det.engine"
    engine.write_bytes(len(header).to_bytes(4, "little") + header + b"\0" * 16)
    err = refused(run_args(case, "--detector", str(engine)), case, capsys)
    assert "metadata 'names'" in err
    script = case.root / "det.torchscript"
    script.write_bytes(b"PK")
    assert "unsupported detector format" in refused(
        run_args(case, "--detector", str(script)), case, capsys
    )


def test_evil_checkpoint_every_entry_point(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    evil = str(case.evil())
    model = torch.load(case.ckpt, weights_only=True)["model"]
    decoder = {k.split(".", 1)[1]: v for k, v in model.items() if k.startswith("mask_decoder.")}
    sameo = case.root / "sameo_decoder.pt"
    torch.save({"decoder": decoder}, sameo)
    for argv in (
        run_args(case, "--sam", evil),
        run_args(case, "--sam", str(sameo), "--base", evil),
        ["demo", "--detector", "gt", "--sam", evil, "--backend", "torch",
         "--out-dir", case.p("out")],
        segment_args(case, **{"--checkpoint": evil}),
        ["export", "--model", evil, "--out", case.p("exp"), "--no-check"],
        ["bench", "--model", evil, "--out-dir", case.p("bench")],
    ):  # fmt: skip
        assert "refused to load" in refused(argv, case, capsys), argv


# --------------------------------------------------------------------------- 2. output = input


def test_output_that_is_an_input(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    video = str(case.video)
    link = case.root / "link.mp4"
    os.link(case.video, link)
    gt = _tiny_gt(case.root)
    (case.root / "exp").mkdir()
    shutil.copy(case.ckpt, case.root / "exp" / "encoder.onnx")
    (case.root / "demo.jsonl").write_text(PREVIOUS)  # a replay log where the demo writes
    (case.root / "annotations.json").write_text("{}")
    shutil.copy(case.image, case.root / "bench.png")
    for argv, message in [
        (run_args(case, "--source", video, "--out", video), "same file as --source"),
        (run_args(case, "--source", video, "--out", str(link)), "same file as --source"),
        (run_args(case, "--source", video, "--jsonl", video), "same file as --source"),
        (run_args(case, "--coco", str(case.keep)), "--jsonl and --coco are the same file"),
        (run_args(case, "--summary", str(case.ckpt)), "same file as --sam"),
        (run_args(case, "--summary", str(case.boxes)), "same file as --detector"),
        (segment_args(case, **{"--out": str(case.image)}), "same file as the input image"),
        (segment_args(case, **{"--json": str(case.ckpt)}), "same file as --checkpoint"),
        (["demo", "--detector", case.p("demo.jsonl"), "--out-dir", str(case.root)],
         "same file as --detector"),
        (["eval", "--gt", str(gt), "--pred", str(gt), "--json", str(gt)], "same file as --gt"),
        (["export", "--model", case.p("exp/encoder.onnx"), "--out", case.p("exp")],
         "same file as --model"),
        (["bench", "--image", case.p("bench.png"), "--out-dir", str(case.root), "--model",
          "tiny"], "same file as --image"),
        (["synth", "from-coco", "--coco", case.p("annotations.json"), "--images", case.p("x"),
          "--out", str(case.root)], "same file as --coco"),
    ]:  # fmt: skip
        assert message in refused(argv, case, capsys), argv


def test_calibrate_json_over_the_export(
    case: Case, capsys: pytest.CaptureFixture[str], export: Path
) -> None:
    folder = case.root / "exp"
    shutil.copytree(export, folder)
    argv = ["calibrate", "--onnx", str(folder), "--precision", "int8",
            "--json", str(folder / "contract.json")]  # fmt: skip
    assert "same file as contract.json in --onnx" in refused(argv, case, capsys)


# --------------------------------------------------------------------------- 3. failed runs


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export folder of the tiny model (graphs and contract.json)."""
    from edge_sameo.engines.export import ExportConfig, export_onnx
    from tests.conftest import seeded_tiny

    out = tmp_path_factory.mktemp("export")
    export_onnx(seeded_tiny(), ExportConfig(out_dir=out, check=False))
    return out


def _broken_export(case: Case, export: Path, how: str) -> Path:
    folder = case.root / f"export_{how.replace(' ', '_')}"
    shutil.copytree(export, folder)
    contract = json.loads((folder / "contract.json").read_text())
    if how == "random encoder":
        (folder / "encoder.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "empty decoder":
        (folder / "decoder.onnx").write_bytes(b"")
    elif how == "random encoder, no sha256":
        (folder / "encoder.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
        contract["sha256"] = {}
    elif how == "empty decoder, no sha256":
        (folder / "decoder.onnx").write_bytes(b"")
        contract["sha256"] = {}
    elif how == "contract shapes":
        contract["encoder"]["inputs"][0]["shape"] = [1, 3, 512, 512]
    (folder / "contract.json").write_text(json.dumps(contract))
    return folder


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("random encoder", "differs from the sha256 in contract.json"),
        ("empty decoder", "differs from the sha256 in contract.json"),
        ("random encoder, no sha256", "not a loadable ONNX graph"),
        ("empty decoder, no sha256", "not a loadable ONNX graph"),
        ("contract shapes", "input 'pixels' has shape [1, 3, 128, 128] in the graph"),
    ],
)
def test_broken_export_keeps_earlier_jsonl(
    case: Case, capsys: pytest.CaptureFixture[str], export: Path, how: str, message: str
) -> None:
    folder = str(_broken_export(case, export, how))
    argv = run_args(case, "--sam", folder, "--backend", "onnxruntime")
    assert message in refused(argv, case, capsys)


def test_openvino_reads_the_same_checks(
    case: Case, capsys: pytest.CaptureFixture[str], export: Path
) -> None:
    pytest.importorskip("openvino")
    folder = str(_broken_export(case, export, "contract shapes"))
    argv = run_args(case, "--sam", folder, "--backend", "openvino")
    assert "has shape" in refused(argv, case, capsys)


def test_failed_run_keeps_earlier_jsonl(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    video = str(case.video)
    for argv, message in [
        (run_args(case, "--conf", "2"), "--conf"),
        (run_args(case, "--out", f"{video}/x.mp4"), "is a file, not a folder"),
        (run_args(case, "--out", case.p("out.txt")), "--out must end in .mp4"),
        (run_args(case, "--source", video, "--detector", "gt"), "needs the synthetic source"),
    ]:
        assert message in refused(argv, case, capsys), argv


# --------------------------------------------------------------------------- 5. options


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--classes", "a,b"), "argument --classes: expected comma-separated class ids"),
        (("--conf", "2"), "argument --conf: expected a number in [0, 1], got '2'"),
        (("--conf", "-1"), "argument --conf: expected a number in [0, 1]"),
        (("--imgsz", "-5"), "argument --imgsz: expected an integer >= 1"),
        (("--frames", "0"), "argument --frames: expected an integer >= 1"),
        (("--detector", "DIR.json"), "replay file is a directory, not a file"),
        (("--detector", "DIR"), "is a directory without an OpenVINO model"),
        (("--sam", "DIR"), "checkpoint is a directory, not a file"),
        (("--source", "missing.mp4"), "source not found"),
    ],
)
def test_bad_run_options(
    case: Case, capsys: pytest.CaptureFixture[str], extra: tuple[str, str], message: str
) -> None:
    (case.root / "DIR.json").mkdir()
    (case.root / "DIR").mkdir()
    flag, value = extra
    value = case.p(value) if value.startswith(("DIR", "missing")) else value
    assert message in refused(run_args(case, flag, value), case, capsys)


def test_demo_conf_is_checked_and_honoured(
    case: Case, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    err = refused(["demo", "--conf", "2", "--out-dir", case.p("out")], case, capsys)
    assert "argument --conf" in err
    import edge_sameo.commands.run as run_command
    from edge_sameo.errors import InputError

    seen: list[float] = []

    def fake_detector(spec: str | None, args: Any) -> Any:
        seen.append(args.conf)
        raise InputError("stop here")

    monkeypatch.setattr(run_command, "make_detector", fake_detector)
    refused(["demo", "--conf", "0.6", "--out-dir", case.p("out")], case, capsys)
    assert seen == [0.6]


def test_frames_limits_a_file(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    out = case.root / "run.jsonl"
    argv = run_args(case, "--source", str(case.video), "--frames", "3", "--jsonl", str(out))
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 3
    assert "first 3 frames" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image": "DIR"}, "image is a directory, not a file"),
        ({"--checkpoint": "DIR"}, "checkpoint is a directory, not a file"),
        ({"image": "bad.png"}, "cannot read image"),  # already handled before #23
        ({"--checkpoint": "bad.pt"}, "not a readable PyTorch checkpoint"),
        ({"--box": "10,10,10,50"}, "zero area"),
        ({"--out": "DIR"}, "is a directory"),
        ({"--out": "o.gifx"}, "unsupported extension"),
    ],
)
def test_bad_segment_input(
    case: Case, capsys: pytest.CaptureFixture[str], changes: dict[str, str], message: str
) -> None:
    (case.root / "DIR").mkdir()
    (case.root / "bad.png").write_bytes(b"\x89PNG not really")
    (case.root / "bad.pt").write_bytes(b"garbage" * 100)
    argv = segment_args(case, **{k: case.p(v) if "," not in v else v for k, v in changes.items()})
    assert message in refused(argv, case, capsys)


# --------------------------------------------------------------------------- 6. eval


def _tiny_gt(root: Path) -> Path:
    mask = np.zeros((10, 10), bool)
    mask[2:6, 2:6] = True
    return write_amodal_coco(
        root / "gt.json",
        [{"id": 1, "file_name": "x.png", "width": 10, "height": 10}],
        [annotation_record(1, 1, 1, mask, mask)],
        [{"id": 1, "name": "a"}],
    )


def _pred(counts: Any, size: tuple[int, int] = (10, 10)) -> dict[str, Any]:
    return {"image_id": 1, "category_id": 1, "score": 0.9,
            "segmentation": {"size": list(size), "counts": counts}}  # fmt: skip


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ("\x7f\x7f\x7f\x7f\x7f~~~~", "not a valid COCO-compressed string"),
        ("garbage!!", "not a valid COCO-compressed string"),
        ("0o", "not a valid COCO-compressed string"),  # a number cut off at the end
        ("1111", "pixels, not the 10x10 = 100 of the mask"),
        ([50, -10, 60], "negative run length"),
        ([50, "x"], "must be integers"),
    ],
)
def test_bad_rle_is_refused(
    case: Case, capsys: pytest.CaptureFixture[str], counts: Any, message: str
) -> None:
    gt = _tiny_gt(case.root)
    good = encode_rle(np.ones((10, 10), bool))
    pred = case.root / "pred.json"
    pred.write_text(json.dumps([_pred(good["counts"]), _pred(counts)]))
    err = refused(["eval", "--gt", str(gt), "--pred", str(pred), "--json", case.p("r.json")],
                  case, capsys)  # fmt: skip
    assert "prediction #1" in err and message in err


def test_bad_eval_files(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    gt = _tiny_gt(case.root)
    (case.root / "DIR").mkdir()
    (case.root / "notjson.json").write_text("{nope")
    for pred, message in [
        (case.p("missing.json"), "predictions file not found"),
        (case.p("DIR"), "predictions file is a directory"),
        (case.p("notjson.json"), "not a JSON file"),
    ]:
        argv = ["eval", "--gt", str(gt), "--pred", pred, "--json", case.p("r.json")]
        assert message in refused(argv, case, capsys)
    argv = ["eval", "--gt", case.p("DIR"), "--pred", str(gt)]
    assert "annotation file is a directory" in refused(argv, case, capsys)


def test_garbage_rle_does_not_hang_eval(tmp_path: Path) -> None:
    """The console entry point, with a time limit: pycocotools looped for minutes here."""
    gt = _tiny_gt(tmp_path)
    pred = tmp_path / "pred.json"
    rng = np.random.default_rng(0)
    garbage = "".join(chr(c) for c in rng.integers(48, 112, 400))
    pred.write_text(json.dumps([_pred(garbage)]))
    proc = subprocess.run(
        [sys.executable, "-m", "edge_sameo", "eval", "--gt", str(gt), "--pred", str(pred)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "prediction #0" in proc.stderr


def test_compressed_counts_match_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    from edge_sameo.masks import compressed_counts

    rng = np.random.default_rng(1)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((h, w)) < rng.random()
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        runs = compressed_counts(rle["counts"])
        assert runs is not None
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
        np.testing.assert_array_equal(flat.reshape(w, h).T, mask)

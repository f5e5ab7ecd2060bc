"""fp16 / int8 (Q/DQ) graphs, the image batcher, the accuracy report and its CLI gates."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_sameo.backends.onnx_common import ort_session
from edge_sameo.calib.batcher import BatcherConfig, ImageBatcher
from edge_sameo.calib.build import CalibrateConfig, calibrate
from edge_sameo.calib.fp16 import build_fp16
from edge_sameo.calib.meta import read_calib_meta
from edge_sameo.calib.qdq import build_int8, quantized_nodes
from edge_sameo.calib.report import compare_precision, rel_l2
from edge_sameo.calib.session import cpu_backend
from edge_sameo.contract import (
    BOXES,
    CALIB_META_FILE,
    CROPS,
    IMAGE_EMBEDDINGS,
    PIXELS,
    ExportContract,
    precision_onnx_name,
    precision_onnx_path,
)
from edge_sameo.engines.export import ExportConfig, export_onnx, reference_inputs
from edge_sameo.engines.trt_ops import check_trt_ops
from edge_sameo.errors import InputError
from tests.conftest import seeded_tiny

GRAPHS = ("encoder.onnx", "decoder.onnx")
#: Ops that the default int8 recipe keeps float: none may read a DequantizeLinear output.
KEPT_FLOAT_OPS = ("LayerNormalization", "Softmax", "Add", "Erf", "InstanceNormalization")
SMALL = {"image_hw": (96, 128), "progress": False}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dual-decoder export with fp16 and int8 variants built once for the module."""
    from edge_sameo import build_model
    from edge_sameo.seeded import manifest_of, seeded_state_dict

    out = tmp_path_factory.mktemp("export")
    model = build_model("tiny", modal_decoder=True)
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=0))
    export_onnx(model, ExportConfig(out_dir=out, check=False))
    build_fp16(out)
    build_int8(out, BatcherConfig(count=6, **SMALL))
    return out


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def test_naming() -> None:
    assert precision_onnx_name("encoder.onnx", "int8") == "encoder.int8.onnx"
    assert precision_onnx_name("decoder.onnx", "fp16") == "decoder.fp16.onnx"
    assert precision_onnx_name("decoder.onnx", "fp32") == "decoder.onnx"
    assert precision_onnx_path("d", "encoder.onnx", "int8") == Path("d/encoder.int8.onnx")
    with pytest.raises(InputError):
        precision_onnx_name("encoder.onnx", "int4")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("graph", GRAPHS)
def test_variant_runs_with_float32_io(export_dir: Path, precision: str, graph: str) -> None:
    path = precision_onnx_path(export_dir, graph, precision)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    for version in ("8.6", "10.1"):
        assert check_trt_ops(proto, version) == [], version
    sess = ort_session(path)
    fp32 = {t.name: t.type for t in ort_session(export_dir / graph).get_inputs()}
    assert {t.name: t.type for t in sess.get_inputs()} == fp32
    assert all(t.type == "tensor(float)" for t in sess.get_inputs() + sess.get_outputs())
    contract = ExportContract.read(export_dir)
    ref = reference_inputs(contract, num_boxes=3)
    if graph == "encoder.onnx":
        (out,) = sess.run(None, {PIXELS: ref["pixels"]})
        assert out.shape == contract.encoder.outputs[0].concrete() and np.isfinite(out).all()
    else:
        (emb,) = ort_session(export_dir / "encoder.onnx").run(None, {PIXELS: ref["pixels"]})
        outs = sess.run(None, {IMAGE_EMBEDDINGS: emb, BOXES: ref["boxes"]})
        assert len(outs) == 4 and all(np.isfinite(o).all() for o in outs)
        assert outs[0].shape[0] == 3


@pytest.mark.parametrize("graph", GRAPHS)
def test_int8_qdq_structure(export_dir: Path, graph: str) -> None:
    proto = onnx.load(str(precision_onnx_path(export_dir, graph, "int8")))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    prod = producers(proto)
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes"
    for node in qdq:
        assert len(node.input) == 3 and np.all(inits[node.input[2]] == 0), node.name
        assert inits[node.input[2]].dtype == np.int8  # symmetric int8, no uint8 / int32 bias
    # Weights: per-channel scales (a vector) on every quantized MatMul/Gemm/Conv weight.
    weight_dq = [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dq and all(inits[n.input[1]].ndim == 1 for n in weight_dq)
    assert all(inits[n.input[1]].size > 1 for n in weight_dq)
    # Attention MatMuls (both inputs activations) stay float by default.
    attention = [n for n in proto.graph.node if re.search(r"attn[^/]*/MatMul(_\d+)?$", n.name)]
    assert attention
    for node in attention:
        assert all(
            prod.get(i) is None or prod[i].op_type != "DequantizeLinear" for i in node.input
        ), node.name
    # Kept-float ops compute on float tensors: nothing they read comes out of a DQ.
    for node in proto.graph.node:
        if node.op_type in KEPT_FLOAT_OPS:
            for name in node.input:
                src = prod.get(name)
                assert src is None or src.op_type != "DequantizeLinear", (node.name, name)
    if graph == "decoder.onnx":
        for node in proto.graph.node:
            if any(k in node.name for k in ("hypernetworks", "iou_prediction", "upscaling")):
                assert all(
                    prod.get(i) is None or prod[i].op_type != "DequantizeLinear" for i in node.input
                ), node.name


def test_calib_meta_records_recipe_and_data(export_dir: Path) -> None:
    meta = read_calib_meta(export_dir)
    assert (export_dir / CALIB_META_FILE).is_file()
    for graph in GRAPHS:
        for precision in ("fp16", "int8"):
            entry = meta["graphs"][precision_onnx_name(graph, precision)]
            assert entry["from"] == graph and entry["precision"] == precision
            assert "LayerNormalization" in entry["kept_float"]["op_types"]
    dec = meta["graphs"]["decoder.int8.onnx"]
    assert dec["calibration"]["source"] == "synthetic" and dec["calibration"]["count"] == 6
    assert dec["calibration_samples"] == 6 and dec["recipe"]["trt_compatible"]
    assert any("iou_prediction_head" in n for n in dec["kept_float"]["nodes"])


@pytest.mark.parametrize("precision,bound", [("fp16", 0.01), ("int8", 0.15)])
def test_accuracy_report_numbers(export_dir: Path, precision: str, bound: float) -> None:
    held_out = ImageBatcher(BatcherConfig(count=6, **SMALL), 128).held_out(3)
    report = compare_precision(export_dir, precision, held_out)
    assert report.images == 3 and len(report.heads) == 2
    assert np.isfinite(report.emb_rel_err_mean) and 0 < report.emb_rel_err_max < bound
    for head in report.heads:
        assert head.boxes > 0 and 0.0 <= head.min_iou <= head.mean_iou <= 1.0
        assert np.isfinite(head.max_iou_pred_err)
    assert "held-out" in report.format_table()
    json.dumps(report.to_dict())


def test_calibrate_with_reference_source(tmp_path: Path) -> None:
    export_onnx(seeded_tiny(), ExportConfig(out_dir=tmp_path, check=False))
    cfg = CalibrateConfig(
        onnx_dir=tmp_path,
        precision="int8",
        data=BatcherConfig(source="reference", count=3, **SMALL),
        eval_count=2,
    )
    report = calibrate(cfg)
    assert report.images == 2 and report.eval_data["start"] == 3
    assert len(report.heads) == 1  # no modal head in this export


def test_batcher_is_deterministic_and_held_out_differs() -> None:
    cfg = BatcherConfig(count=3, seed=5, **SMALL)
    a = list(ImageBatcher(cfg, 64).samples())
    b = list(ImageBatcher(cfg, 64).samples())
    assert len(a) == 3
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.boxes, y.boxes)
    # Item i does not depend on count: a longer run starts with the same items.
    longer = list(ImageBatcher(BatcherConfig(count=4, seed=5, **SMALL), 64).samples())
    assert np.array_equal(longer[2].boxes, a[2].boxes)
    held = list(ImageBatcher(cfg, 64).held_out(2).samples())
    assert not np.array_equal(held[0].image, a[0].image)
    assert np.array_equal(held[0].image, longer[3].image)
    feed = next(ImageBatcher(cfg, 64).encoder_feeds())
    assert feed[PIXELS].shape == (1, 3, 64, 64) and feed[PIXELS].dtype == np.float32
    s = a[0]
    h, w = s.image.shape[:2]
    assert (s.boxes[:, 2] > s.boxes[:, 0]).all() and (s.boxes[:, 2] <= w).all()
    assert (s.boxes[:, 3] > s.boxes[:, 1]).all() and (s.boxes[:, 3] <= h).all()


def test_batcher_folder_and_video_sources(tmp_path: Path) -> None:
    import cv2

    from edge_sameo.io import write_image
    from edge_sameo.seeded import reference_image

    folder = tmp_path / "imgs"
    for i in range(3):
        write_image(folder / f"{i}.png", reference_image(80, 100, seed=i))
    cfg = BatcherConfig(source="folder", path=folder, count=5, progress=False)
    names = [s.name for s in ImageBatcher(cfg, 64).samples()]
    assert sorted(names) == ["0.png", "1.png", "2.png"]  # count capped by the folder
    assert names == [s.name for s in ImageBatcher(cfg, 64).samples()]

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (100, 80))
    for i in range(7):
        writer.write(reference_image(80, 100, seed=i)[..., ::-1].copy())
    writer.release()
    cfg = BatcherConfig(source="video", path=video, count=4, frame_stride=3, progress=False)
    got = list(ImageBatcher(cfg, 64).samples())
    assert [s.name for s in got] == ["frame 0", "frame 3", "frame 6"]
    assert got[0].image.shape == (80, 100, 3)
    with pytest.raises(InputError):
        BatcherConfig(source="video", path=tmp_path / "missing.mp4")


def test_decoder_feeds_use_real_embeddings(export_dir: Path) -> None:
    batcher = ImageBatcher(BatcherConfig(count=2, **SMALL), 128)
    encoder = ort_session(export_dir / "encoder.onnx")
    feeds = list(batcher.decoder_feeds(encoder))
    sample = next(batcher.samples())
    (emb,) = encoder.run(None, {PIXELS: batcher.pixels(sample)})
    np.testing.assert_array_equal(feeds[0][IMAGE_EMBEDDINGS], emb)
    assert feeds[0][BOXES].dtype == np.float32 and feeds[0][BOXES].shape[1] == 4
    assert (feeds[0][BOXES] >= 0).all() and (feeds[0][BOXES] <= 128).all()


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """``edge_sameo.cli.main`` with ``calibrate`` registered (until COMMANDS lists it)."""
    from edge_sameo import cli as cli_module

    if "calibrate" not in cli_module.COMMANDS:
        monkeypatch.setattr(cli_module, "COMMANDS", (*cli_module.COMMANDS, "calibrate"))
    return cli_module.main


def test_cli_gates_and_bad_input(
    cli: Callable[[list[str]], int], export_dir: Path, tmp_path: Path
) -> None:
    common = ["--count", "3", "--eval-count", "2", "--no-progress", "--source", "reference"]
    fp16 = ["calibrate", "--onnx", str(export_dir), "--precision", "fp16", *common]
    report = tmp_path / "r.json"
    assert cli([*fp16, "--gate-emb-rel-err", "0", "--json", str(report)]) == 1
    data = json.loads(report.read_text())
    assert data["gate_failures"] and data["precision"] == "fp16"
    assert cli([*fp16, "--gate-emb-rel-err", "0.5", "--gate-mask-iou", "0.5"]) == 0
    assert cli(["calibrate", "--onnx", str(tmp_path / "nope"), "--precision", "int8"]) == 2
    bad_source = ["calibrate", "--onnx", str(export_dir), "--precision", "int8"]
    assert cli([*bad_source, "--source", "video"]) == 2
    assert cli([*bad_source, "--source", "folder", str(tmp_path / "none")]) == 2


# --- the refiner graph -------------------------------------------------------------------


@pytest.fixture(scope="module")
def refined_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny export with a refiner, and its fp16 and int8 variants."""
    from tests.conftest import refined_tiny

    out = tmp_path_factory.mktemp("refined")
    export_onnx(refined_tiny(), ExportConfig(out_dir=out, check=False))
    build_fp16(out)
    build_int8(out, BatcherConfig(count=4, **SMALL))
    return out


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_refiner_variants(refined_dir: Path, precision: str) -> None:
    path = precision_onnx_path(refined_dir, "refiner.onnx", precision)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    for version in ("8.6", "10.1"):
        assert check_trt_ops(proto, version) == [], version
    sess = ort_session(path)
    assert all(t.type == "tensor(float)" for t in sess.get_inputs() + sess.get_outputs())
    # Real crops (int8 scales were calibrated on such; random tensors saturate them).
    batcher = ImageBatcher(BatcherConfig(count=4, **SMALL), 128).held_out(1)
    (feed,) = batcher.refiner_feeds(cpu_backend(refined_dir))
    (got,) = sess.run(None, feed)
    (ref,) = ort_session(refined_dir / "refiner.onnx").run(None, feed)
    assert got.shape == (len(feed[CROPS]), 2, 32, 32)
    assert rel_l2(got, ref) < (0.01 if precision == "fp16" else 0.1)
    entry = read_calib_meta(refined_dir)["graphs"][path.name]
    assert entry["from"] == "refiner.onnx"
    assert entry["kept_float"]["nodes"] == ["/refiner/head/Conv"]


def test_int8_refiner_quantizes_its_convolutions(refined_dir: Path) -> None:
    proto = onnx.load(str(precision_onnx_path(refined_dir, "refiner.onnx", "int8")))
    convs = {n.name for n in proto.graph.node if n.op_type == "Conv"}
    assert set(quantized_nodes(proto)) == convs - {"/refiner/head/Conv"}
    entry = read_calib_meta(refined_dir)["graphs"]["refiner.int8.onnx"]
    assert entry["calibration_samples"] == 4 and "crops" in entry["calibration"]


def test_refiner_feeds_are_the_predictors_crops(refined_dir: Path) -> None:
    from edge_sameo.backends.recording import RecordingBackend
    from edge_sameo.predictor import AmodalPredictor

    batcher = ImageBatcher(BatcherConfig(count=2, **SMALL), 128)
    backend = cpu_backend(refined_dir)
    feeds = list(batcher.refiner_feeds(backend))
    assert len(feeds) == 2
    recorder = RecordingBackend(backend)
    predictor = AmodalPredictor(recorder)
    sample = next(batcher.samples())
    predictor.set_image(sample.image)
    predictor.predict(sample.boxes)
    np.testing.assert_array_equal(feeds[0][CROPS], recorder.crops)
    assert feeds[0][CROPS].shape == (len(sample.boxes), 6, 32, 32)
    with pytest.raises(InputError, match="no refiner"):
        next(batcher.refiner_feeds(cpu_backend(export_dir_of_plain(refined_dir))))


def export_dir_of_plain(refined_dir: Path) -> Path:
    """A plain (no refiner) export beside ``refined_dir``."""
    out = refined_dir.parent / "plain"
    if not (out / "contract.json").is_file():
        export_onnx(seeded_tiny(), ExportConfig(out_dir=out, check=False))
    return out


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_accuracy_report_covers_the_refiner(refined_dir: Path, precision: str) -> None:
    from edge_sameo.calib.report import Gates

    held_out = ImageBatcher(BatcherConfig(count=4, **SMALL), 128).held_out(2)
    report = compare_precision(refined_dir, precision, held_out)
    r = report.refiner
    assert r is not None
    assert r.boxes == report.heads[0].boxes > 0
    assert 0.0 <= r.amodal_min_iou <= r.amodal_mean_iou <= 1.0
    assert 0.0 <= r.visible_min_iou <= r.visible_mean_iou <= 1.0
    assert 0.0 < r.logits_rel_err_max < (0.01 if precision == "fp16" else 0.2)
    assert report.files["refiner"] == f"refiner.{precision}.onnx"
    table = report.format_table()
    assert "refined amodal" in table and "refined visible" in table
    assert {"refined amodal", "refined visible"} <= set(report.mask_ious())
    failures = report.failures(Gates(mask_iou=1.0))
    assert any(line.startswith("refined amodal") for line in failures) == (r.amodal_mean_iou < 1)
    json.dumps(report.to_dict())

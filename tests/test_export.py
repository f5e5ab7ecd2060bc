from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from edge_sameo import build_model
from edge_sameo.cli import main
from edge_sameo.contract import (
    BOXES,
    CROPS,
    IMAGE_EMBEDDINGS,
    LOW_RES_LOGITS,
    MODAL_LOW_RES_LOGITS,
    NUM_BOXES,
    PIXELS,
    REFINED_LOGITS,
    REFINER_FILE,
    ExportContract,
    decoder_contract,
)
from edge_sameo.engines.checks import ExportCheckError, check_export
from edge_sameo.engines.export import ExportConfig, export_onnx
from edge_sameo.engines.trt_ops import check_trt_ops, load_table
from edge_sameo.errors import InputError
from edge_sameo.modeling import EfficientSam
from edge_sameo.seeded import manifest_of, seeded_state_dict


def dual_tiny() -> EfficientSam:
    model = build_model("tiny", modal_decoder=True)
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=1))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EfficientSam]:
    out = tmp_path_factory.mktemp("export")
    model = dual_tiny()
    export_onnx(model, ExportConfig(out_dir=out))  # check=True: ORT vs torch + TRT ops
    return out, model


def test_a_two_layer_decoder_exports_with_the_same_numbers(tmp_path: Path) -> None:
    """The few-query / folded-query attention of the layers after the first (the tiny
    model's decoder has one layer) through ONNX Runtime: the original torch code's numbers
    at 1 and 5 boxes; the weight reshapes and repeated biases fold into constants."""
    import onnxruntime as ort

    from edge_sameo.modeling import set_token_layout
    from tests.conftest import seeded_tiny

    model = seeded_tiny(2, modal_decoder=True, decoder_depth=2)
    torch.manual_seed(5)
    for name, p in model.named_parameters():
        if name.startswith(("mask_decoder.", "modal_decoder.")) and name.endswith("bias"):
            p.data.normal_()
    export_onnx(model, ExportConfig(out_dir=tmp_path))  # check=True: ORT vs torch + TRT ops
    graph = onnx.load(str(tmp_path / "decoder.onnx")).graph
    assert "Tile" not in {n.op_type for n in graph.node}  # the upscaling's bias, 4 times
    sess = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    model.eval()
    set_token_layout(model, False)  # the original code
    emb = model.encode(torch.rand(1, 3, 128, 128))
    for n in (1, 5):
        xy = torch.rand(n, 2) * 80
        boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2) * 38], 1)
        with torch.no_grad():
            want, _ = model.decode_boxes(emb, boxes)
        got = sess.run(None, {IMAGE_EMBEDDINGS: emb.detach().numpy(), BOXES: boxes.numpy()})[0]
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_export_writes_graphs_and_contract(exported: tuple[Path, EfficientSam]) -> None:
    out, model = exported
    contract = ExportContract.read(out)
    assert contract.has_modal and contract.model == model.config
    dec = onnx.load(str(out / contract.decoder.file))
    assert [i.name for i in dec.graph.input] == [IMAGE_EMBEDDINGS, BOXES]
    outs = [o.name for o in dec.graph.output]
    assert outs[0] == LOW_RES_LOGITS and MODAL_LOW_RES_LOGITS in outs
    box_dim = dec.graph.input[1].type.tensor_type.shape.dim[0]
    assert box_dim.dim_param == NUM_BOXES
    enc = onnx.load(str(out / contract.encoder.file))
    assert [i.name for i in enc.graph.input] == [PIXELS]
    # the bicubic pos_embed resize is a constant: no Resize op at all
    assert not any(n.op_type == "Resize" for n in enc.graph.node)
    assert contract.decoder.profiles[NUM_BOXES] == (1, 8, 64)
    data = json.loads((out / "contract.json").read_text())
    assert set(data["sha256"]) == {"encoder.onnx", "decoder.onnx"}


def test_check_runs_several_box_counts(exported: tuple[Path, EfficientSam]) -> None:
    out, model = exported
    report = check_export(out, model, box_counts=(1, 2, 9))
    assert max(report.rel_err.values()) <= 1e-4
    assert set(report.trt_versions) == {"8.6", "10.1"}


def test_check_catches_a_wrong_model(exported: tuple[Path, EfficientSam]) -> None:
    out, _ = exported
    other = build_model("tiny", modal_decoder=True)  # random weights, not the exported ones
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        check_export(out, other)


def test_low_opset_decomposes_layernorm(tmp_path: Path) -> None:
    model = dual_tiny()
    contract = export_onnx(model, ExportConfig(out_dir=tmp_path, opset=16))
    for graph in (contract.encoder, contract.decoder):
        proto = onnx.load(str(tmp_path / graph.file))
        assert not any(n.op_type == "LayerNormalization" for n in proto.graph.node)
        assert check_trt_ops(proto, "8.5") == []


def test_trt_tables_and_restrictions() -> None:
    assert not load_table("8.5")["LayerNormalization"].supported
    assert load_table("8.6")["LayerNormalization"].supported
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    zp = helper.make_tensor("zp", TensorProto.INT8, [], [3])
    sc = helper.make_tensor("sc", TensorProto.FLOAT, [], [0.1])
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="cubic"),
        helper.make_node("QuantizeLinear", ["r", "sc", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["d"]),
        helper.make_node("LayerNormalization", ["d", "sc"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [scales, zp, sc])
    problems = check_trt_ops(helper.make_model(graph), "8.5")
    assert any("Resize mode 'cubic'" in p for p in problems)
    assert sum("zero point" in p for p in problems) == 2
    assert any("LayerNormalization" in p and "not supported" in p for p in problems)


def test_contract_profiles_and_roundtrip(exported: tuple[Path, EfficientSam]) -> None:
    out, model = exported
    contract = ExportContract.read(out)
    lo, opt, hi = contract.decoder.profile_shapes(BOXES)
    assert (lo, opt, hi) == ((1, 4), (8, 4), (64, 4))
    assert ExportContract.from_dict(contract.to_dict()) == contract
    with pytest.raises(ValueError, match="min <= opt <= max"):
        decoder_contract(model.config, box_profile=(4, 2, 8))


def test_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", "tiny", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "TensorRT parser ops OK for: 8.6, 10.1" in out
    assert (tmp_path / "e" / "encoder.onnx").is_file()
    assert main(["export", "--model", "tiny", "--out", str(tmp_path / "f"), "--opset", "9"]) == 2
    assert "--opset must be in" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2


def test_exported_decoder_handles_any_box_count(exported: tuple[Path, EfficientSam]) -> None:
    import onnxruntime as ort

    out, _ = exported
    sess = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    emb = np.random.default_rng(0).standard_normal((1, 32, 8, 8)).astype(np.float32)
    for n in (1, 3, 70):
        boxes = np.tile(np.array([[10, 10, 60, 80]], np.float32), (n, 1))
        logits, iou, modal_logits, _ = sess.run(None, {IMAGE_EMBEDDINGS: emb, BOXES: boxes})
        assert logits.shape == (n, 3, 32, 32) and iou.shape == (n, 3)
        assert modal_logits.shape == logits.shape


# --- the refiner graph -------------------------------------------------------------------


@pytest.fixture(scope="module")
def refined(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EfficientSam]:
    from tests.conftest import refined_tiny

    out = tmp_path_factory.mktemp("refined")
    model = refined_tiny()
    export_onnx(model, ExportConfig(out_dir=out))  # check=True: every graph, N = 1, 3, 8
    return out, model


def test_export_writes_the_refiner_graph(refined: tuple[Path, EfficientSam]) -> None:
    out, model = refined
    assert model.refiner is not None
    contract = ExportContract.read(out)
    assert contract.has_refiner and contract.refiner_config == model.refiner.config
    assert [g.name for g in contract.graphs] == ["encoder", "decoder", "refiner"]
    assert ExportContract.from_dict(contract.to_dict()) == contract
    assert contract.refiner is not None and contract.refiner.profiles[NUM_BOXES] == (1, 8, 64)
    for name, digest in contract.sha256.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert set(contract.sha256) == {"encoder.onnx", "decoder.onnx", "refiner.onnx"}
    proto = onnx.load(str(out / REFINER_FILE))
    assert [i.name for i in proto.graph.input] == [CROPS]
    assert [o.name for o in proto.graph.output] == [REFINED_LOGITS]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == NUM_BOXES
    assert proto.opset_import[0].version == contract.opset
    ops = {n.op_type for n in proto.graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops  # folded in eval mode
    assert all(n.name.startswith("/refiner/") for n in proto.graph.node if n.op_type == "Conv")


def test_check_covers_the_refiner(refined: tuple[Path, EfficientSam]) -> None:
    out, model = refined
    report = check_export(out, model, box_counts=(1, 3, 8))
    assert report.rel_err[REFINED_LOGITS] <= 1e-4
    assert {"Conv", "MaxPool", "Resize", "Concat"} <= set(report.op_counts["refiner"])
    other = copy.deepcopy(model)
    assert other.refiner is not None
    with torch.no_grad():
        other.refiner.head.bias += 1.0
    with pytest.raises(ExportCheckError, match="refined_logits differs from PyTorch"):
        check_export(out, other)


def test_refiner_runs_at_any_box_count(refined: tuple[Path, EfficientSam]) -> None:
    import onnxruntime as ort

    out, model = refined
    assert model.refiner is not None
    sess = ort.InferenceSession(str(out / REFINER_FILE), providers=["CPUExecutionProvider"])
    for n in (1, 3, 70):
        crops = np.random.default_rng(n).standard_normal((n, 6, 32, 32)).astype(np.float32)
        (logits,) = sess.run(None, {CROPS: crops})
        with torch.no_grad():
            ref = model.refiner(torch.from_numpy(crops)).numpy()
        np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_refiner_needs_the_modal_decoder(tmp_path: Path) -> None:
    from tests.conftest import refined_tiny

    model = refined_tiny()
    model.modal_decoder = None
    with pytest.raises(InputError, match="modal decoder's logits"):
        export_onnx(model, ExportConfig(out_dir=tmp_path, check=False))


def test_the_runtime_exports_only_when_handed_an_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_sameo.backends.registry import create_backend
    from edge_sameo.checkpoint import save_model

    monkeypatch.setenv("EDGE_SAMEO_CACHE", str(tmp_path / "cache"))
    model = dual_tiny()
    with pytest.raises(InputError, match=r"this model has no export in .*edge-sameo export"):
        create_backend(model, "onnxruntime")
    assert not (tmp_path / "cache").exists()
    # The CLI hands the runtime the exporter: `run` on a checkpoint exports on first use.
    save_model(model, tmp_path / "model.pt")
    checkpoint, jsonl = str(tmp_path / "model.pt"), str(tmp_path / "o.jsonl")
    argv = ["run", "--source", "synth:1", "--frames", "2", "--sam", checkpoint,
            "--backend", "onnxruntime", "--detector", "gt", "--jsonl", jsonl]  # fmt: skip
    assert main(argv) == 0
    assert "segmenter: onnxruntime fp32" in capsys.readouterr().out
    backend = create_backend(model, "onnxruntime")  # exported now: loaded without exporter
    assert backend.describe().startswith("onnxruntime fp32")


@pytest.mark.slow
def test_export_cli_with_a_refiner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_sameo.checkpoint import save_model
    from tests.conftest import refined_tiny

    save_model(refined_tiny(), tmp_path / "refined.pt")
    argv = ["export", "--model", str(tmp_path / "refined.pt"), "--out", str(tmp_path / "e")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "refiner.onnx: refined_logits ['num_boxes', 2, 32, 32]" in out
    assert "refined_logits" in out.split("rel err:")[1]


def test_python_predictor_auto_runs_without_an_export_and_exports_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's Python quickstart in a fresh cache: ``auto`` on a checkpoint with no
    export runs torch (nothing to load, nothing to export with); with ``**on_demand()``
    the fastest runtime here exports it once, and later predictors load that export."""
    from edge_sameo import AmodalPredictor
    from edge_sameo.backends.registry import auto_choice
    from edge_sameo.checkpoint import save_model
    from edge_sameo.engines.on_demand import on_demand

    monkeypatch.setenv("EDGE_SAMEO_CACHE", str(tmp_path / "cache"))
    save_model(dual_tiny(), tmp_path / "model.pt")
    fastest = auto_choice()[0]
    first = AmodalPredictor(tmp_path / "model.pt", backend="auto")
    assert first.backend.describe().startswith("torch")
    assert not (tmp_path / "cache").exists()
    exported = AmodalPredictor(tmp_path / "model.pt", backend="auto", **on_demand())
    assert exported.backend.describe().startswith(fastest)
    again = AmodalPredictor(tmp_path / "model.pt", backend="auto")
    assert again.backend.describe().startswith(fastest)
    image = np.zeros((96, 128, 3), np.uint8)
    for predictor in (first, exported):
        predictor.set_image(image)
        assert predictor.predict([[10, 10, 60, 50]]).masks.shape == (1, 96, 128)

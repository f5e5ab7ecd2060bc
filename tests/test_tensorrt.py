"""TensorRT: what runs everywhere (errors, config, precision routes, layer selection,
calibration staging, the runbook on CPU) and what needs TensorRT and a GPU (marked)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from edge_sameo import cli
from edge_sameo.backends.cuda_memory import CudaStream, DeviceArray, NoGpuError
from edge_sameo.backends.tensorrt_loader import load_tensorrt
from edge_sameo.build import CONFIGS
from edge_sameo.contract import BOXES, IMAGE_EMBEDDINGS, PIXELS, decoder_contract, encoder_contract
from edge_sameo.engines.calibrator import FeedStager
from edge_sameo.engines.fp32_layers import LayerInfo, select_fp32_layers
from edge_sameo.engines.precision_plan import TrtFeatures, onnx_precision, plan_precision
from edge_sameo.engines.tensorrt_build import BuildConfig, build_for_runtime
from edge_sameo.errors import InputError, MissingDependencyError
from tests.conftest import REFINER_BOXES

TINY = CONFIGS["tiny"]
ENC, DEC = encoder_contract(TINY), decoder_contract(TINY)
EXTRA = "pip install 'edge-sameo[trt]'"

TRT86 = TrtFeatures("8.6.1", True, True, False, True)
TRT10 = TrtFeatures("10.3.0", True, True, True, True)
TRT11 = TrtFeatures("11.0.0", False, False, True, False)


def seeded_tiny() -> Any:
    from edge_sameo import build_model
    from edge_sameo.seeded import manifest_of, seeded_state_dict

    model = build_model("tiny")
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=0))
    return model


def real_tensorrt() -> ModuleType | None:
    try:
        return load_tensorrt()
    except MissingDependencyError:
        return None


@pytest.fixture()
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` fail, as on a machine without the package."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


# --- small ONNX graphs carrying each precision ------------------------------------------


def graph_file(path: Path, kind: str) -> Path:
    """A one-input graph: plain fp32, with an FP16 cast round trip, or with Q/DQ."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = []
    if kind == "fp32":
        nodes = [helper.make_node("Identity", ["x"], ["y"])]
    elif kind == "fp16":
        nodes = [
            helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT),
        ]
    else:
        inits = [
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("z", TensorProto.INT8, [], [0]),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def export_dir(tmp_path: Path) -> Path:
    graph_file(tmp_path / "encoder.onnx", "fp32")
    graph_file(tmp_path / "decoder.onnx", "fp32")
    return tmp_path


@pytest.mark.parametrize("kind", ["fp32", "fp16", "int8"])
def test_onnx_precision_reads_the_graph(tmp_path: Path, kind: str) -> None:
    assert onnx_precision(graph_file(tmp_path / "g.onnx", kind)) == kind


# --- errors where TensorRT / a GPU is missing ---------------------------------------------


def test_load_tensorrt_names_the_extra(no_tensorrt: None) -> None:
    with pytest.raises(MissingDependencyError, match=r"tensorrt is not installed: pip install"):
        load_tensorrt()


def test_type_stubs_alone_are_not_tensorrt() -> None:
    # tensorrt-stubs makes `import tensorrt` succeed as an empty namespace package.
    tensorrt = importlib.import_module("tensorrt")
    if hasattr(tensorrt, "Builder"):
        pytest.skip("the real tensorrt is installed")
    with pytest.raises(MissingDependencyError, match=r"only its type stubs.*edge-sameo\[trt\]"):
        load_tensorrt()


def test_backend_without_tensorrt_is_a_clear_error(no_tensorrt: None, export_dir: Path) -> None:
    from edge_sameo.backends.tensorrt_backend import TensorRTBackend

    with pytest.raises(MissingDependencyError, match=r"pip install 'edge-sameo\[trt\]'"):
        TensorRTBackend(export_dir, "fp16")
    with pytest.raises(InputError, match="fp32, fp16, int8, not 'bf16'"):
        TensorRTBackend(export_dir, "bf16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_no_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_sameo.backends.cuda_memory import open_cuda_stream

    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(NoGpuError, match="no CUDA GPU found: TensorRT needs an NVIDIA GPU"):
        open_cuda_stream()


def test_build_command_exits_2_with_one_line(
    no_tensorrt: None,
    export_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "build" not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "build"))
    rc = cli.main(["build", "--onnx", str(export_dir), "--precision", "int8", "--workspace", "512"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.splitlines() == [f"edge-sameo build: error: tensorrt is not installed: {EXTRA}"]


def test_build_command_rejects_bad_options_before_tensorrt(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if "build" not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "build"))
    rc = cli.main(["build", "--onnx", str(export_dir), "--keep-fp32", "LayerNorm,GELU"])
    assert rc == 2
    assert "cannot keep 'GELU' in FP32" in capsys.readouterr().err


# --- BuildConfig ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"precision": "bf16"}, "--precision must be one of fp32, fp16, int8"),
        ({"graphs": "neck"}, "graphs must be one of"),
        ({"workspace_mib": 0}, "--workspace must be >= 1 MiB"),
        ({"max_aux_streams": -1}, "--max-aux-streams must be >= 0"),
        ({"keep_fp32": ("Softmax", "Gelu")}, "cannot keep 'Gelu' in FP32"),
    ],
)
def test_build_config_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        BuildConfig(onnx_dir=Path("x"), **changes)


def test_build_config_paths_and_defaults(tmp_path: Path) -> None:
    cfg = BuildConfig(onnx_dir=str(tmp_path), timing_cache=str(tmp_path / "t.cache"))  # type: ignore[arg-type]
    assert cfg.onnx_dir == tmp_path and cfg.timing_cache == tmp_path / "t.cache"
    assert cfg.engine_dir == tmp_path and cfg.keep_fp32 == ("LayerNorm", "Softmax")
    assert cfg.calib_cache_file("encoder") == tmp_path / "encoder.int8.calib"
    feeds = [{PIXELS: np.zeros((1, 3, 128, 128), np.float32)}]
    per_graph = BuildConfig(onnx_dir=tmp_path, calibration_feeds={"encoder": feeds})
    assert per_graph.feeds_for("encoder") is feeds and per_graph.feeds_for("decoder") is None
    assert BuildConfig(onnx_dir=tmp_path, calibration_feeds=feeds).feeds_for("decoder") is feeds


def test_feature_detection_by_attribute() -> None:
    def module(flags: list[str], net: list[str], calibrator: bool) -> Any:
        return SimpleNamespace(
            __version__="x",
            BuilderFlag=SimpleNamespace(**dict.fromkeys(flags, 0)),
            NetworkDefinitionCreationFlag=SimpleNamespace(**dict.fromkeys(net, 0)),
            IBuilderConfig=SimpleNamespace(**({"int8_calibrator": None} if calibrator else {})),
            **({"IInt8EntropyCalibrator2": object} if calibrator else {}),
        )

    v86 = TrtFeatures.detect(module(["FP16", "INT8"], ["EXPLICIT_BATCH"], True))
    v10 = TrtFeatures.detect(module(["FP16", "INT8"], ["EXPLICIT_BATCH", "STRONGLY_TYPED"], True))
    v11 = TrtFeatures.detect(module(["TF32"], ["STRONGLY_TYPED"], False))
    assert (v86.precision_flags, v86.calibrators, v86.strongly_typed) == (True, True, False)
    assert (v10.precision_flags, v10.calibrators, v10.strongly_typed) == (True, True, True)
    assert (v11.precision_flags, v11.calibrators, v11.strongly_typed) == (False, False, True)


# --- precision routes ----------------------------------------------------------------------


def test_strongly_typed_only_refuses_a_plain_graph_for_int8(export_dir: Path) -> None:
    cfg = BuildConfig(onnx_dir=export_dir, precision="int8")
    with pytest.raises(InputError) as info:
        plan_precision(ENC, cfg, TRT11)
    msg = str(info.value)
    assert "TensorRT 11.0.0 builds strongly typed networks only" in msg
    assert "encoder.int8.onnx (Q/DQ)" in msg and "a plain fp32 graph cannot be used" in msg
    assert f"edge-sameo calibrate --onnx {export_dir} --precision int8" in msg


def test_a_plain_graph_named_int8_is_refused(export_dir: Path) -> None:
    graph_file(export_dir / "encoder.int8.onnx", "fp32")
    cfg = BuildConfig(onnx_dir=export_dir, precision="int8")
    for features in (TRT86, TRT10, TRT11):
        with pytest.raises(InputError, match=r"encoder\.int8\.onnx has no Q/DQ"):
            plan_precision(ENC, cfg, features, calibration=True)


def test_strongly_typed_uses_the_precision_carrying_graph(export_dir: Path) -> None:
    graph_file(export_dir / "encoder.fp16.onnx", "fp16")
    graph_file(export_dir / "decoder.int8.onnx", "int8")
    for features in (TRT10, TRT11):
        plan = plan_precision(ENC, BuildConfig(onnx_dir=export_dir), features)
        assert plan.typed and plan.onnx.name == "encoder.fp16.onnx" and plan.flags == ()
        cfg = BuildConfig(onnx_dir=export_dir, precision="int8")
        plan = plan_precision(DEC, cfg, features)
        assert plan.typed and plan.onnx.name == "decoder.int8.onnx" and not plan.calibrate


def test_flags_route_fp16_keeps_layers_in_fp32(export_dir: Path) -> None:
    for features in (TRT86, TRT10):
        plan = plan_precision(ENC, BuildConfig(onnx_dir=export_dir), features)
        assert not plan.typed and plan.onnx.name == "encoder.onnx"
        assert plan.flags == ("FP16", "PREFER_PRECISION_CONSTRAINTS")
        assert plan.keep_fp32 == ("LayerNorm", "Softmax")
    bare = plan_precision(ENC, BuildConfig(onnx_dir=export_dir, keep_fp32=()), TRT10)
    assert bare.flags == ("FP16",) and bare.keep_fp32 == ()


def test_flags_route_int8_needs_calibration(export_dir: Path) -> None:
    cfg = BuildConfig(onnx_dir=export_dir, precision="int8")
    with pytest.raises(InputError, match=r"calibration feeds or an existing calibration cache"):
        plan_precision(ENC, cfg, TRT86)
    plan = plan_precision(ENC, cfg, TRT86, calibration=True)
    assert plan.calibrate and plan.flags[:2] == ("INT8", "FP16") and not plan.typed
    no_calibrators = TrtFeatures("10.x", True, False, True, True)
    with pytest.raises(InputError, match="has no INT8 calibrators"):
        plan_precision(ENC, cfg, no_calibrators, calibration=True)


def test_qdq_graph_on_tensorrt_86_uses_flags_without_calibrator(export_dir: Path) -> None:
    graph_file(export_dir / "encoder.int8.onnx", "int8")
    cfg = BuildConfig(onnx_dir=export_dir, precision="int8")
    plan = plan_precision(ENC, cfg, TRT86)
    assert plan.onnx.name == "encoder.int8.onnx" and not plan.typed and not plan.calibrate
    assert "INT8" in plan.flags


def test_fp32_plans(export_dir: Path) -> None:
    cfg = BuildConfig(onnx_dir=export_dir, precision="fp32")
    assert not plan_precision(ENC, cfg, TRT10).typed
    eleven = plan_precision(ENC, cfg, TRT11)
    assert eleven.typed and eleven.onnx.name == "encoder.onnx"
    assert "strongly typed" in eleven.describe()


# --- which layers stay FP32 (names from a real export) -----------------------------------

#: ONNX op -> the TensorRT LayerType the parser makes of it (for the ops that matter here)
KIND = {
    "LayerNormalization": "NORMALIZATION",
    "Softmax": "SOFTMAX",
    "ReduceMean": "REDUCE",
    "Sqrt": "UNARY",
    "MatMul": "MATRIX_MULTIPLY",
    "Gemm": "MATRIX_MULTIPLY",
}


@pytest.fixture(scope="module")
def exported_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[LayerInfo]]:
    from edge_sameo.engines.export import ExportConfig, export_onnx

    out = {}
    for opset in (16, 17):
        d = tmp_path_factory.mktemp(f"opset{opset}")
        export_onnx(seeded_tiny(), ExportConfig(out_dir=d, opset=opset, check=False))
        proto = onnx.load(str(d / "encoder.onnx"))
        out[opset] = [
            LayerInfo(i, n.name, KIND.get(n.op_type, "ELEMENTWISE"))
            for i, n in enumerate(proto.graph.node)
        ]
    return out


def chosen_names(layers: list[LayerInfo], keep: tuple[str, ...]) -> dict[str, str]:
    picked = select_fp32_layers(layers, keep)
    return {layers[i].name: group for i, group in picked.items()}


def test_fp32_layers_opset17(exported_layers: dict[int, list[LayerInfo]]) -> None:
    names = chosen_names(exported_layers[17], ("LayerNorm", "Softmax"))
    assert names["/encoder/blocks.0/norm1/LayerNormalization"] == "LayerNorm"
    assert names["/encoder/blocks.1/attn/Softmax"] == "Softmax"
    # The neck's LayerNorm2d is always decomposed: found by its ReduceMean + Sqrt scope.
    assert names["/encoder/neck/neck.1/Sqrt"] == "LayerNorm"
    assert names["/encoder/neck/neck.3/Add_1"] == "LayerNorm"
    assert "/encoder/blocks.0/Add" not in names  # residual Adds are opt-in
    assert not any("/mlp/" in n or "/qkv/" in n for n in names)


def test_fp32_layers_opset16_and_residual_adds(exported_layers: dict[int, list[LayerInfo]]) -> None:
    names = chosen_names(exported_layers[16], ("LayerNorm", "Add"))
    for op in ("ReduceMean", "ReduceMean_1", "Pow", "Add", "Sqrt", "Add_1"):
        assert names[f"/encoder/blocks.0/norm2/{op}"] == "LayerNorm"
    assert names["/encoder/blocks.0/Add"] == names["/encoder/blocks.1/Add_1"] == "Add"
    assert "/encoder/blocks.0/attn/Pow" not in names  # the attention's scale, not a norm
    assert "/encoder/blocks.0/mlp/fc1/Add" not in names  # a Linear's bias
    assert not any(group == "Softmax" for group in names.values())


# --- calibration feed staging --------------------------------------------------------------


class HostStream(CudaStream):
    """Host memory standing in for device memory (the stager's logic needs no GPU)."""

    kind = "host"
    handle = 0

    def __init__(self) -> None:
        self.allocations: list[bytearray] = []
        self.syncs = 0

    def device_name(self) -> str:
        return "host"

    def compute_capability(self) -> tuple[int, int]:
        return (0, 0)

    def empty(self, nbytes: int) -> DeviceArray:
        self.allocations.append(bytearray(nbytes))
        return DeviceArray(len(self.allocations) - 1, nbytes, self.allocations[-1])

    def pinned(self, shape: Any, dtype: Any) -> Any:
        return np.empty(shape, dtype)

    def htod(self, dst: DeviceArray, src: Any) -> None:
        dst.owner[: src.nbytes] = np.ascontiguousarray(src).tobytes()

    def dtoh(self, dst: Any, src: DeviceArray, nbytes: int) -> None:
        dst.reshape(-1).view(np.uint8)[:nbytes] = np.frombuffer(src.owner, np.uint8)[:nbytes]

    def synchronize(self) -> None:
        self.syncs += 1


def test_feed_stager_allocates_once_and_fits_boxes_to_the_opt_profile() -> None:
    stream = HostStream()
    emb_shape = DEC.input(IMAGE_EMBEDDINGS).concrete()
    feeds: list[dict[str, Any]] = [
        {IMAGE_EMBEDDINGS: np.full(emb_shape, k, np.float32), BOXES: np.arange(4 * n).reshape(n, 4)}
        for k, n in ((1, 3), (2, 12))
    ]
    stager = FeedStager(DEC, feeds, stream)
    opt = DEC.profiles["num_boxes"][1]
    first = stager.next_pointers([BOXES, IMAGE_EMBEDDINGS])
    boxes = np.frombuffer(stream.allocations[first[0]], np.float32).reshape(opt, 4)
    assert boxes[3].tolist() == [0, 1, 2, 3]  # 3 boxes cycled to fill the opt count
    second = stager.next_pointers([BOXES, IMAGE_EMBEDDINGS])
    assert second == first and len(stream.allocations) == 2  # buffers allocated once
    assert np.frombuffer(stream.allocations[first[1]], np.float32)[0] == 2.0
    assert stager.next_pointers([BOXES, IMAGE_EMBEDDINGS]) == [] and stager.batches == 2
    assert stager.error is None


def test_feed_stager_keeps_errors_out_of_tensorrt() -> None:
    bad = FeedStager(ENC, [{PIXELS: np.zeros((1, 3, 64, 64), np.float32)}], HostStream())
    assert bad.next_pointers([PIXELS]) == []
    assert isinstance(bad.error, InputError) and "calibrates at (1, 3, 128, 128)" in str(bad.error)
    feeds: list[dict[str, Any]] = [{"image": np.zeros(1)}]
    missing = FeedStager(ENC, feeds, HostStream())
    assert missing.next_pointers([PIXELS]) == [] and "lacks 'pixels'" in str(missing.error)


# --- the runbook on this machine -----------------------------------------------------------


def load_runbook(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "gpu_runbook.py"
    spec = importlib.util.spec_from_file_location("gpu_runbook", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_runbook", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the runbook measures for real")
def test_runbook_runs_on_cpu_and_reports_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "runbook.json"
    rc = load_runbook(monkeypatch).main(
        ["--config", "tiny", "--boxes", "3", "--warmup", "1", "--iters", "1", "--json", str(out)]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert text.count("| torch cuda |") == 2 and "skipped: no CUDA GPU" in text
    rows = {(r["runtime"], r["precision"]): r for r in json.loads(out.read_text())["rows"]}
    assert rows[("torch cpu", "fp32")]["status"] == "ok"
    assert rows[("onnxruntime cpu", "fp32")]["emb_rel_err"] < 1e-4
    assert rows[("onnxruntime cpu", "fp32")]["mask_iou_min"] == 1.0
    for key in (("torch cuda", "fp16"), ("tensorrt", "fp16"), ("tensorrt", "int8")):
        assert rows[key]["status"].startswith("skipped: no CUDA GPU")


# --- TensorRT on a GPU (skipped where either is missing) -----------------------------------


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if real_tensorrt() is None:
        pytest.skip("tensorrt is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from edge_sameo.engines.export import ExportConfig, export_onnx

    d = tmp_path_factory.mktemp("trt_export")
    export_onnx(seeded_tiny(), ExportConfig(out_dir=d, max_boxes=16, check=False))
    return d


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-2), ("fp16", 5e-2)])
def test_engines_match_onnxruntime(tiny_export: Path, precision: str, tol: float) -> None:
    import onnxruntime as ort

    from edge_sameo.backends.tensorrt_backend import TensorRTBackend
    from edge_sameo.engines.export import reference_inputs
    from edge_sameo.engines.tensorrt_build import build_engines

    backend = TensorRTBackend(tiny_export, precision, build=build_for_runtime)
    assert backend.max_boxes == 16 and backend.cuda_graph == "on", backend.describe()
    contract = backend.contract
    inputs = reference_inputs(contract, num_boxes=40)  # > max_boxes: the base class chunks
    enc = ort.InferenceSession(str(tiny_export / "encoder.onnx"))
    dec = ort.InferenceSession(str(tiny_export / "decoder.onnx"))
    (emb_ref,) = enc.run(None, {PIXELS: inputs["pixels"]})
    logits_ref = dec.run(None, {IMAGE_EMBEDDINGS: emb_ref, BOXES: inputs["boxes"]})[0]
    emb = backend.encode(inputs["pixels"])
    out = backend.decode(emb, inputs["boxes"])
    assert out.low_res_logits.shape == logits_ref.shape
    assert np.abs(emb - emb_ref).max() / np.abs(emb_ref).max() < tol
    agree = ((out.low_res_logits > 0) == (logits_ref > 0)).mean()
    assert agree > 0.98
    # Same input through the copy path (not the on-GPU embedding) gives the same result.
    again = backend.decode(np.array(emb), inputs["boxes"][:5])
    np.testing.assert_allclose(again.low_res_logits, out.low_res_logits[:5], rtol=0, atol=1e-5)
    backend.close()
    reused = build_engines(BuildConfig(onnx_dir=tiny_export, precision=precision))
    assert [e.built for e in reused] == [False, False]


# --- every graph of an export through a fake TensorRT (no GPU, no tensorrt) ----------------


class FakeEngine:
    """A "serialized engine": the ONNX file it was built from and its profile, run by ONNX
    Runtime on :class:`HostStream` memory (device pointers index its allocations)."""

    def __init__(self, data: bytes, stream: HostStream) -> None:
        import onnxruntime as ort

        meta = json.loads(data)
        self.stream = stream
        self.profile = {k: tuple(tuple(s) for s in v) for k, v in meta["profile"].items()}
        self.session = ort.InferenceSession(meta["onnx"], providers=["CPUExecutionProvider"])
        self.inputs = [t.name for t in self.session.get_inputs()]
        self.outputs = [t.name for t in self.session.get_outputs()]
        self.num_io_tensors = len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i: int) -> str:
        return (self.inputs + self.outputs)[i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name in self.inputs else "output"

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_profile_shape(self, name: str, index: int) -> tuple[tuple[int, ...], ...]:
        return self.profile[name]

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.shapes = {
            t.name: tuple(t.shape) for t in engine.session.get_inputs() if name_static(t.shape)
        }

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.shapes:
            return self.shapes[name]
        spec = next(t for t in self.engine.session.get_outputs() if t.name == name)
        if name_static(spec.shape):
            return tuple(spec.shape)
        # Our graphs have one dynamic axis, the box axis of their inputs and outputs.
        rows = next(s[0] for n, s in self.shapes.items() if n in self.engine.profile)
        return tuple(d if isinstance(d, int) else rows for d in spec.shape)

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def execute_async_v3(self, handle: int) -> bool:
        memory = self.engine.stream.allocations
        feeds = {}
        for name in self.engine.inputs:
            shape = self.shapes[name]
            raw = memory[self.addresses[name]]
            feeds[name] = np.frombuffer(raw, np.float32, math.prod(shape)).reshape(shape)
        outs = self.engine.session.run(None, feeds)
        for name, out in zip(self.engine.outputs, outs, strict=True):
            data = np.ascontiguousarray(out, np.float32).tobytes()
            memory[self.addresses[name]][: len(data)] = data
        return True


def name_static(shape: list[Any]) -> bool:
    return all(isinstance(d, int) for d in shape)


def fake_tensorrt(stream: HostStream) -> Any:
    """Just enough of TensorRT's Python API (10.x names) for ``build_engines`` and
    ``TensorRTBackend``; ``built`` lists the ONNX files each build parsed."""
    built: list[str] = []

    class Network:
        def __init__(self) -> None:
            self.path = ""
            self.ins: list[str] = []
            self.outs: list[str] = []
            self.layers: list[Any] = []

        num_inputs = property(lambda self: len(self.ins))
        num_outputs = property(lambda self: len(self.outs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i: int) -> Any:
            return SimpleNamespace(name=self.ins[i])

        def get_output(self, i: int) -> Any:
            return SimpleNamespace(name=self.outs[i])

        def get_layer(self, i: int) -> Any:
            return self.layers[i]

    class Parser:
        num_errors = 0

        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            proto = onnx.load(path)
            net = self.network
            net.path, net.ins = path, [i.name for i in proto.graph.input]
            net.outs = [o.name for o in proto.graph.output]
            net.layers = [
                SimpleNamespace(
                    name=n.name,
                    type=SimpleNamespace(name=KIND.get(n.op_type, "ELEMENTWISE")),
                    num_outputs=0,
                )
                for n in proto.graph.node
            ]
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[tuple[int, ...]]] = {}

        def set_shape(self, name: str, *shapes: tuple[int, ...]) -> None:
            self.shapes[name] = list(shapes)

    class Config:
        int8_calibrator = None

        def __init__(self) -> None:
            self.profiles: list[Profile] = []
            self.flags: list[str] = []

        def add_optimization_profile(self, profile: Profile) -> None:
            self.profiles.append(profile)

        def set_flag(self, flag: str) -> None:
            self.flags.append(flag)

        def create_timing_cache(self, data: bytes) -> Any:
            return SimpleNamespace(serialize=lambda: data)

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> None:
            self.timing_cache = cache

        def get_timing_cache(self) -> Any:
            return self.timing_cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            built.append(Path(network.path).name)
            profile = config.profiles[0].shapes if config.profiles else {}
            return json.dumps({"onnx": network.path, "profile": profile}).encode()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine:
            return FakeEngine(data, stream)

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    return SimpleNamespace(
        __version__="10.3.0",
        built=built,
        Logger=Logger,
        Builder=Builder,
        OnnxParser=Parser,
        Runtime=Runtime,
        BuilderFlag=SimpleNamespace(
            FP16="FP16",
            INT8="INT8",
            PREFER_PRECISION_CONSTRAINTS="PREFER",
            OBEY_PRECISION_CONSTRAINTS="OBEY",
        ),
        NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1),
        IBuilderConfig=Config,
        IInt8EntropyCalibrator2=object,
        MemoryPoolType=SimpleNamespace(WORKSPACE=0),
        TensorIOMode=SimpleNamespace(INPUT="input", OUTPUT="output"),
        float32="float32",
        float16="float16",
        nptype=lambda dtype: np.float32,
    )


@pytest.fixture(scope="module")
def refiner_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_sameo.engines.export import ExportConfig, export_onnx
    from tests.conftest import refined_tiny

    d = tmp_path_factory.mktemp("trt_refiner")
    export_onnx(refined_tiny(), ExportConfig(out_dir=d, max_boxes=4, check=False))
    return d


@pytest.fixture()
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``load_tensorrt`` and ``open_cuda_stream`` answer with the fakes."""
    import edge_sameo.backends.cuda_memory as cuda_memory
    import edge_sameo.backends.tensorrt_loader as tensorrt_loader

    stream = HostStream()
    trt = fake_tensorrt(stream)
    monkeypatch.setattr(tensorrt_loader, "load_tensorrt", lambda: trt)
    monkeypatch.setattr(cuda_memory, "open_cuda_stream", lambda: stream)
    return trt


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_build_engines_covers_every_graph(
    refiner_export: Path, tmp_path: Path, fake_trt: Any, precision: str
) -> None:
    from edge_sameo.engines.tensorrt_build import build_engines

    cfg = BuildConfig(onnx_dir=refiner_export, precision=precision, out_dir=tmp_path)
    first = build_engines(cfg)
    assert [e.graph for e in first] == ["encoder", "decoder", "refiner"]
    assert all(e.built for e in first) and fake_trt.built[-1] == "refiner.onnx"
    sidecar = json.loads((tmp_path / f"refiner.{precision}.engine.json").read_text())
    assert sidecar["key"]["profile"] == {"crops": [[1, 6, 32, 32], [4, 6, 32, 32], [4, 6, 32, 32]]}
    again = build_engines(cfg)
    assert [e.built for e in again] == [False, False, False]
    only = build_engines(
        BuildConfig(
            onnx_dir=refiner_export,
            precision=precision,
            graphs="refiner",
            out_dir=tmp_path,
            rebuild=True,
        )
    )
    assert [(e.graph, e.built) for e in only] == [("refiner", True)]


def test_build_config_refuses_a_graph_the_export_lacks(export_dir: Path) -> None:
    from edge_sameo.contract import ExportContract

    contract = ExportContract(TINY, ENC, DEC, opset=17)
    with pytest.raises(InputError, match="this export has no refiner graph"):
        BuildConfig(onnx_dir=export_dir, graphs="refiner").selected(contract)
    assert BuildConfig(onnx_dir=export_dir).selected(contract) == (ENC, DEC)
    # "both" keeps its old meaning, encoder and decoder, also beside a refiner
    from edge_sameo.contract import refiner_contract
    from edge_sameo.modeling import RefinerConfig

    rcfg = RefinerConfig(crop=32, widths=(4, 8, 16))
    with_ref = ExportContract(
        TINY, ENC, DEC, opset=17, refiner=refiner_contract(rcfg), refiner_config=rcfg
    )
    assert BuildConfig(onnx_dir=export_dir, graphs="both").selected(with_ref) == (ENC, DEC)
    assert len(BuildConfig(onnx_dir=export_dir).selected(with_ref)) == 3


def test_tensorrt_backend_refines_like_onnxruntime(
    refiner_export: Path, tmp_path: Path, fake_trt: Any
) -> None:
    from edge_sameo.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge_sameo.backends.tensorrt_backend import TensorRTBackend
    from edge_sameo.predictor import AmodalPredictor
    from edge_sameo.seeded import reference_image

    backend = TensorRTBackend(refiner_export, "fp32", engine_dir=tmp_path, build=build_for_runtime)
    ort_backend = OnnxRuntimeBackend(refiner_export, providers=("CPUExecutionProvider",))
    assert backend.has_refiner and backend.max_boxes == 4
    crops = np.random.default_rng(0).standard_normal((6, 6, 32, 32)).astype(np.float32)
    out = backend.refine(crops)  # 6 > max_boxes: chunked by the base class
    np.testing.assert_allclose(out, ort_backend.refine(crops), rtol=1e-5, atol=1e-6)
    results = []
    for runtime in (backend, ort_backend):
        predictor = AmodalPredictor(runtime)
        predictor.set_image(reference_image(96, 128, seed=5))
        results.append(predictor.predict(REFINER_BOXES))
    assert results[0].masks.any() and not results[0].masks.all()
    assert np.array_equal(results[0].masks, results[1].masks)
    assert results[0].speed["refiner"] > 0
    backend.close()


def test_the_runtime_loads_cached_engines_and_builds_only_when_handed_a_builder(
    refiner_export: Path, tmp_path: Path, fake_trt: Any
) -> None:
    from edge_sameo.backends.tensorrt_backend import TensorRTBackend
    from edge_sameo.engines.tensorrt_build import build_engines

    with pytest.raises(InputError) as info:
        TensorRTBackend(refiner_export, "fp16", engine_dir=tmp_path)
    message = str(info.value)
    assert (
        "no loadable fp16 engine of the encoder graph" in message and "no cached engine" in message
    )
    assert f"edge-sameo build --onnx {refiner_export} --precision fp16 --out {tmp_path}" in message
    with pytest.raises(TypeError, match="need a build callable"):
        TensorRTBackend(refiner_export, "fp16", engine_dir=tmp_path, workspace_mib=64)
    assert fake_trt.built == []  # nothing was built without a builder
    cfg = BuildConfig(onnx_dir=refiner_export, precision="fp16", out_dir=tmp_path)
    built = {e.graph: e.path for e in build_engines(cfg)}
    backend = TensorRTBackend(refiner_export, "fp16", engine_dir=tmp_path)
    assert backend.engines == built and len(fake_trt.built) == 3  # loaded, not rebuilt
    backend.close()
    # Another TensorRT: the cached engines are not loadable, a builder rebuilds them.
    fake_trt.__version__ = "10.4.0"
    with pytest.raises(InputError, match="built on another platform: trt_version"):
        TensorRTBackend(refiner_export, "fp16", engine_dir=tmp_path)
    backend = TensorRTBackend(refiner_export, "fp16", engine_dir=tmp_path, build=build_for_runtime)
    assert backend.trt_version == "10.4.0" and len(fake_trt.built) == 6
    backend.close()


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-2), ("fp16", 5e-2)])
def test_refiner_engine_matches_onnxruntime(
    refiner_export: Path, tmp_path: Path, precision: str, tol: float
) -> None:
    if real_tensorrt() is None:
        pytest.skip("tensorrt is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from edge_sameo.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge_sameo.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(
        refiner_export, precision, engine_dir=tmp_path, build=build_for_runtime
    )
    crops = np.random.default_rng(1).standard_normal((10, 6, 32, 32)).astype(np.float32)
    ref = OnnxRuntimeBackend(refiner_export, providers=("CPUExecutionProvider",)).refine(crops)
    got = backend.refine(crops)  # 10 > the profile's 4: chunked
    assert got.shape == ref.shape and np.abs(got - ref).max() / np.abs(ref).max() < tol
    backend.close()

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge_sameo import AmodalPredictor, build_model
from edge_sameo.backends.base import Backend, DecoderOutput
from edge_sameo.backends.registry import auto_choice, create_backend, export_dir_for
from edge_sameo.backends.torch_backend import TorchBackend
from edge_sameo.engines.export import ExportConfig, export_onnx, export_to
from edge_sameo.errors import InputError, MissingDependencyError
from edge_sameo.modeling import EfficientSam
from edge_sameo.preprocess import resize_pixels
from edge_sameo.seeded import manifest_of, reference_image, seeded_state_dict

HAS_OV = importlib.util.find_spec("openvino") is not None


def dual_tiny() -> EfficientSam:
    model = build_model("tiny", modal_decoder=True)
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=2))
    return model


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp")
    export_onnx(dual_tiny(), ExportConfig(out_dir=out))
    return out


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    pixels = resize_pixels(reference_image(96, 128, seed=4), 128)
    boxes = np.array([[5, 6, 60, 70], [20, 10, 120, 90], [0, 0, 128, 128]], np.float32)
    return pixels, boxes


def reference(inputs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, DecoderOutput]:
    backend = TorchBackend(dual_tiny(), "fp32", "cpu", attention="explicit")
    emb = backend.encode(inputs[0])
    return emb, backend.decode(emb, inputs[1])


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


FP32_RUNTIMES = [
    ("torch", None),
    ("onnxruntime", None),
    pytest.param("openvino", None, marks=pytest.mark.skipif(not HAS_OV, reason="no openvino")),
]


@pytest.mark.parametrize("name, _", FP32_RUNTIMES)
def test_fp32_runtimes_match_original_numerics(
    name: str, _: None, export_dir: Path, inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    source = dual_tiny() if name == "torch" else export_dir
    backend = create_backend(source, name, "fp32")
    ref_emb, ref_out = reference(inputs)
    emb = backend.encode(inputs[0])
    out = backend.decode(emb, inputs[1])
    assert rel(emb, ref_emb) <= 1e-4
    assert rel(out.low_res_logits, ref_out.low_res_logits) <= 1e-4
    assert rel(out.iou_predictions, ref_out.iou_predictions) <= 1e-4
    assert out.modal_low_res_logits is not None and ref_out.modal_low_res_logits is not None
    assert rel(out.modal_low_res_logits, ref_out.modal_low_res_logits) <= 1e-4


@pytest.mark.skipif(not HAS_OV, reason="no openvino")
def test_openvino_bf16_is_close(export_dir: Path, inputs: tuple[np.ndarray, np.ndarray]) -> None:
    from edge_sameo.backends.openvino_backend import OpenVINOBackend

    ref_emb, _ = reference(inputs)
    backend = OpenVINOBackend(export_dir, "bf16", decoder_precision="fp32")
    assert backend.describe() == "openvino bf16 encoder, fp32 decoder"
    emb = backend.encode(inputs[0])
    assert np.isfinite(emb).all() and rel(emb, ref_emb) < 0.1


class Counting(Backend):
    """A fake runtime recording the chunk sizes the base class hands it."""

    name = "counting"
    max_boxes = 2

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.contract, "fp32")
        self.inner = inner
        self.calls: list[int] = []

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.inner.encode(pixels)

    def _decode(self, embedding: np.ndarray, boxes: np.ndarray) -> DecoderOutput:
        self.calls.append(len(boxes))
        return self.inner.decode(embedding, boxes)


def test_decode_is_chunked_at_max_boxes(inputs: tuple[np.ndarray, np.ndarray]) -> None:
    inner = TorchBackend(dual_tiny(), "fp32", "cpu")
    chunked = Counting(inner)
    emb = inner.encode(inputs[0])
    boxes = np.concatenate([inputs[1], inputs[1][:2]])
    out = chunked.decode(emb, boxes)
    assert chunked.calls == [2, 2, 1]
    whole = inner.decode(emb, boxes)
    np.testing.assert_allclose(out.low_res_logits, whole.low_res_logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="N >= 1"):
        chunked.decode(emb, boxes[:0])


def test_registry_errors(export_dir: Path) -> None:
    with pytest.raises(InputError, match="unknown backend"):
        create_backend(export_dir, "tflite")
    with pytest.raises(InputError, match="supports precision"):
        create_backend(export_dir, "onnxruntime", "bf16")
    with pytest.raises(InputError, match="needs a checkpoint or model"):
        create_backend(export_dir, "torch")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(MissingDependencyError, match=r"edge-sameo\[trt\]"):
            create_backend(export_dir, "tensorrt")
    with pytest.raises(InputError, match=r"missing .*int8\.onnx.*calibrate"):
        create_backend(export_dir, "onnxruntime", "int8")


def test_ort_session_setup(export_dir: Path) -> None:
    """The one ONNX Runtime set-up (backend, calibration, export checks): the CPU provider
    unless told otherwise, every graph optimisation, warnings off, the threads asked for."""
    import onnxruntime as ort

    from edge_sameo.backends.onnx_common import ort_session

    sess = ort_session(export_dir / "encoder.onnx", threads=1)
    opts = sess.get_session_options()
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert opts.intra_op_num_threads == 1 and opts.log_severity_level == 3
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert ort_session(export_dir / "decoder.onnx").get_session_options().intra_op_num_threads == 0


def test_auto_choice_is_available() -> None:
    name, precision = auto_choice()
    assert name in ("openvino", "onnxruntime", "torch", "tensorrt")
    if HAS_OV:
        assert name == "openvino" and precision in ("bf16", "fp32")


@pytest.mark.skipif(not HAS_OV, reason="no openvino")
def test_openvino_default_makes_masks_in_fp32(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO's default precision (named or picked by auto) runs the encoder in bf16 and
    the decoder in fp32 where bf16 pays (a refiner in bf16: below), else everything in fp32;
    a named precision applies to every graph."""
    from edge_sameo.backends import openvino_backend

    for pays, default in ((True, "openvino bf16 encoder, fp32 decoder"), (False, "openvino fp32")):
        monkeypatch.setattr(openvino_backend, "cpu_prefers_bf16", lambda pays=pays: pays)
        assert create_backend(export_dir, "openvino").describe() == default
        assert create_backend(export_dir, "auto").describe() == default
        assert create_backend(export_dir, "openvino", "bf16").describe() == "openvino bf16"
        assert create_backend(export_dir, "openvino", "fp32").describe() == "openvino fp32"
    # options the caller passes win over the defaults (here fp32, as patched last)
    mixed = create_backend(export_dir, "openvino", decoder_precision="bf16")
    assert mixed.describe() == "openvino fp32 encoder, bf16 decoder"


def test_bf16_is_chosen_where_it_was_measured_faster() -> None:
    from edge_sameo.backends.openvino_backend import bf16_pays

    avx512_bf16 = {"avx512f", "avx512_bf16"}
    assert bf16_pays(True, "AuthenticAMD", avx512_bf16)  # Zen 4
    assert bf16_pays(True, "GenuineIntel", avx512_bf16 | {"amx_bf16", "amx_tile"})
    assert not bf16_pays(True, "GenuineIntel", avx512_bf16)  # no AMX: fp32 was faster
    assert not bf16_pays(False, "AuthenticAMD", {"avx2"})  # no native bf16


def test_cpuinfo_fields_reads_the_first_processor() -> None:
    from edge_sameo.backends.openvino_backend import cpuinfo_fields

    text = (
        "\nprocessor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx512_bf16 amx_bf16\n"
        "\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n"
    )
    fields = cpuinfo_fields(text)
    assert fields["vendor_id"] == "GenuineIntel" and fields["processor"] == "0"
    assert fields["flags"].split() == ["fpu", "avx512_bf16", "amx_bf16"]
    assert cpuinfo_fields("") == {}


@pytest.mark.parametrize(
    ("has_avx512", "export", "why"),
    [
        (False, "int8", "INT8: this CPU has no AVX-512"),
        (True, "float", "float"),
        (None, "float", "float"),
    ],
)
def test_bundled_detector_is_int8_on_cpus_without_avx512(
    monkeypatch: pytest.MonkeyPatch, has_avx512: bool | None, export: str, why: str
) -> None:
    """The AVX2 class gets the INT8 export (measured: the float one runs in fp32 there at
    about 1.4x its time for the same accuracy); AVX-512 CPUs and unknown ones the float one."""
    from edge_sameo import bundled
    from edge_sameo.backends import openvino_backend
    from edge_sameo.commands.run import describe_detector

    monkeypatch.setattr(openvino_backend, "cpu_has_avx512", lambda: has_avx512)
    path, reason = bundled.default_detector()
    assert path == (bundled.DETECTOR_INT8 if export == "int8" else bundled.DETECTOR)
    assert reason == why
    assert describe_detector(None) == f"bundled YOLOv8n ({why})"
    assert describe_detector("float") == "bundled YOLOv8n (float)"
    assert describe_detector("int8") == "bundled YOLOv8n (INT8)"


def test_cpu_has_avx512_reads_this_machines_flags() -> None:
    from edge_sameo.backends.openvino_backend import cpu_has_avx512, cpuinfo_fields

    try:
        flags = set(cpuinfo_fields(Path("/proc/cpuinfo").read_text()).get("flags", "").split())
    except OSError:
        flags = set()
    expected = ("avx512f" in flags) if "sse2" in flags else None
    assert cpu_has_avx512() is expected


def test_model_export_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_SAMEO_CACHE", str(tmp_path))
    model = dual_tiny()
    first = export_dir_for(model, export_to)
    stamp = (first / "encoder.onnx").stat().st_mtime_ns
    assert export_dir_for(model) == first
    assert (first / "encoder.onnx").stat().st_mtime_ns == stamp
    backend = create_backend(model, "onnxruntime")
    assert backend.describe().startswith("onnxruntime fp32")


def test_predictor_on_export_folder_gives_visible_and_amodal(
    export_dir: Path, inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    image = reference_image(96, 128, seed=4)
    boxes = [[5, 6, 60, 70], [20, 10, 120, 90]]
    torch_pred = AmodalPredictor(dual_tiny())
    torch_pred.set_image(image)
    expected = torch_pred.predict(boxes)
    onnx_pred = AmodalPredictor(export_dir, backend="onnxruntime")
    onnx_pred.set_image(image)
    got = onnx_pred.predict(boxes)
    assert got.visible_masks is not None and expected.visible_masks is not None
    assert (got.masks == expected.masks).mean() > 0.999
    assert (got.visible_masks == expected.visible_masks).mean() > 0.999
    assert got.visible_scores is not None and got.visible_scores.shape == (2,)
    empty = onnx_pred.predict([])
    assert empty.visible_masks is not None and empty.visible_masks.shape == (0, 96, 128)


# --- the refiner on every runtime ------------------------------------------------------------


@pytest.fixture(scope="module")
def refined_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EfficientSam]:
    """A refiner model (with the occluder channel and the mirror average, as the bundled
    one) and its export."""
    from tests.conftest import refined_tiny

    out = tmp_path_factory.mktemp("refined")
    model = refined_tiny(occluders=True, mirror=True)
    export_onnx(model, ExportConfig(out_dir=out, check=False))
    return out, model


@pytest.fixture(scope="module")
def crops(refined_export: tuple[Path, EfficientSam]) -> np.ndarray:
    """The crops the predictor builds for the refiner on a test image (torch fp32)."""
    from edge_sameo.backends.recording import RecordingBackend
    from tests.conftest import REFINER_BOXES

    recorder = RecordingBackend(TorchBackend(refined_export[1], "fp32", "cpu"))
    predictor = AmodalPredictor(recorder)
    predictor.set_image(reference_image(96, 128, seed=4))
    predictor.predict(REFINER_BOXES)
    assert recorder.crops is not None and recorder.crops.shape == (3, 7, 32, 32)
    return recorder.crops


@pytest.mark.parametrize("name, _", FP32_RUNTIMES[1:])
def test_refine_matches_torch(
    name: str, _: None, refined_export: tuple[Path, EfficientSam], crops: np.ndarray
) -> None:
    directory, model = refined_export
    backend = create_backend(directory, name, "fp32")
    assert backend.has_refiner
    ref = TorchBackend(model, "fp32", "cpu").refine(crops)
    got = backend.refine(crops)
    assert got.shape == ref.shape == (3, 2, 32, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("name, _", FP32_RUNTIMES[1:])
def test_predictor_masks_with_refiner_match_torch(
    name: str, _: None, refined_export: tuple[Path, EfficientSam]
) -> None:
    from tests.conftest import REFINER_BOXES

    directory, model = refined_export
    image = reference_image(96, 128, seed=4)
    results = []
    for predictor in (AmodalPredictor(model), AmodalPredictor(directory, name, "fp32")):
        predictor.set_image(image)
        results.append(predictor.predict(REFINER_BOXES))
    expected, got = results
    assert expected.masks.any() and not expected.masks.all()  # masks with boundaries
    assert expected.visible_masks is not None and got.visible_masks is not None
    # Pixels whose refined logit is ~0 may flip between runtimes; nothing else.
    assert (got.masks != expected.masks).mean() < 1e-3
    assert (got.visible_masks != expected.visible_masks).mean() < 1e-3
    assert got.speed["refiner"] > 0


def test_a_model_without_refiner_cannot_refine(export_dir: Path) -> None:
    backend = create_backend(export_dir, "onnxruntime")
    assert not backend.has_refiner
    with pytest.raises(InputError, match="no refiner"):
        backend.refine(np.zeros((1, 6, 32, 32), np.float32))


@pytest.mark.skipif(not HAS_OV, reason="no openvino")
def test_openvino_runs_the_refiner_at_the_decoder_precision_or_its_own(
    refined_export: tuple[Path, EfficientSam], crops: np.ndarray
) -> None:
    from edge_sameo.backends.openvino_backend import OpenVINOBackend

    backend = OpenVINOBackend(refined_export[0], "bf16", decoder_precision="fp32")
    assert backend.describe() == "openvino bf16 encoder, fp32 decoder + refiner"
    ref = TorchBackend(refined_export[1], "fp32", "cpu").refine(crops)
    assert rel(backend.refine(crops), ref) <= 1e-4
    # the refiner can have a precision of its own: what auto picks where bf16 pays
    auto = OpenVINOBackend(refined_export[0], "bf16", **OpenVINOBackend.default_options("bf16"))
    assert auto.describe() == "openvino bf16 encoder, fp32 decoder, bf16 refiner"
    assert auto.refiner_precision == "bf16" and auto.decoder_precision == "fp32"
    assert rel(auto.refine(crops), ref) <= 0.1
    with pytest.raises(InputError, match="refiner precision 'fp8' unknown"):
        OpenVINOBackend(refined_export[0], "fp32", refiner_precision="fp8")


def test_export_cache_key_covers_the_refiner_config() -> None:
    from edge_sameo.checkpoint import weights_digest
    from edge_sameo.modeling import RefinerConfig
    from tests.test_refiner import with_refiner

    small = with_refiner(dual_tiny())
    larger_crop = with_refiner(dual_tiny(), RefinerConfig(crop=64, widths=(4, 8, 16)))
    assert weights_digest(small) != weights_digest(larger_crop)  # the same weights
    assert weights_digest(small) != weights_digest(dual_tiny())


def test_export_cache_folder_names_the_graph_revision() -> None:
    """A newer edge-sameo that exports other graphs does not reuse an older export."""
    from edge_sameo.backends.registry import GRAPH_REVISION, cached_export_dir
    from edge_sameo.checkpoint import weights_digest

    model = dual_tiny()
    assert cached_export_dir(model).name == f"{weights_digest(model)}-r{GRAPH_REVISION}"

"""Choosing and creating runtimes: ``create_backend(source, backend, precision)``.

``source`` is a model (``EfficientSam``), a checkpoint path, or an export folder
(``contract.json`` + ONNX graphs). ONNX runtimes given a model export it once into a
cache folder keyed by the weights (``$EDGE_SAMEO_CACHE``, default ``~/.cache/edge-sameo``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edge_sameo.backends.base import Backend
from edge_sameo.contract import CONTRACT_FILE
from edge_sameo.errors import InputError
from edge_sameo.modeling import EfficientSam

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
#: Import path of each runtime's class (imported only when chosen).
_CLASSES = {
    "torch": "edge_sameo.backends.torch_backend:TorchBackend",
    "onnxruntime": "edge_sameo.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "edge_sameo.backends.openvino_backend:OpenVINOBackend",
    "tensorrt": "edge_sameo.backends.tensorrt_backend:TensorRTBackend",
}
_PACKAGES = {
    "torch": "torch",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
}


def backend_class(name: str) -> type[Backend]:
    if name not in _CLASSES:
        raise InputError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    module, cls = _CLASSES[name].split(":")
    result: type[Backend] = getattr(importlib.import_module(module), cls)
    return result


def is_available(name: str) -> bool:
    """Package importable (and, for TensorRT, the real package plus a CUDA GPU)."""
    if importlib.util.find_spec(_PACKAGES[name]) is None:
        return False
    if name != "tensorrt":
        return True
    if not torch.cuda.is_available():
        return False
    from edge_sameo.engines.tensorrt_build import load_tensorrt
    from edge_sameo.errors import MissingDependencyError

    try:  # tensorrt-stubs alone import as an empty package
        load_tensorrt()
    except MissingDependencyError:
        return False
    return True


def auto_choice() -> tuple[str, str]:
    """(backend, precision) expected fastest here, by the order measured in
    docs/BENCHMARKS.md: GPU -> TensorRT fp16, else torch CUDA fp16; CPU -> OpenVINO
    (bf16 where the CPU has native bf16), else ONNX Runtime fp32, else torch."""
    if torch.cuda.is_available():
        return ("tensorrt", "fp16") if is_available("tensorrt") else ("torch", "fp16")
    if is_available("openvino"):
        from edge_sameo.backends.openvino_backend import cpu_supports_bf16

        return ("openvino", "bf16" if cpu_supports_bf16() else "fp32")
    if is_available("onnxruntime"):
        return ("onnxruntime", "fp32")
    return ("torch", "fp32")


def cache_root() -> Path:
    return Path(os.environ.get("EDGE_SAMEO_CACHE", Path.home() / ".cache" / "edge-sameo"))


def weights_digest(model: EfficientSam) -> str:
    """Key of a model's cached export: its configs (the refiner's crop size and window
    growth change the export without changing any weight) and its weights."""
    h = hashlib.sha256(repr(model.config.to_dict()).encode())
    if model.refiner is not None:
        h.update(repr(model.refiner.config.to_dict()).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def export_dir_for(model: EfficientSam) -> Path:
    """The cached export folder of a model, exporting (and checking) it on first use."""
    from edge_sameo.engines.export import ExportConfig, export_onnx

    directory = cache_root() / "exports" / weights_digest(model)
    if not (directory / CONTRACT_FILE).is_file():
        export_onnx(model, ExportConfig(out_dir=directory))
    return directory


def _as_model(source: EfficientSam | str | Path) -> EfficientSam:
    if isinstance(source, EfficientSam):
        return source
    from edge_sameo.checkpoint import load_model

    return load_model(source)


def create_backend(
    source: EfficientSam | str | Path,
    backend: str = "auto",
    precision: str | None = None,
    **options: Any,
) -> Backend:
    """Create a runtime for ``source`` (model, checkpoint path or export folder).

    ``backend="auto"`` picks the fastest available (see :func:`auto_choice`);
    ``precision=None`` takes the runtime's default.
    """
    is_export = isinstance(source, (str, Path)) and (Path(source) / CONTRACT_FILE).is_file()
    if backend == "auto":
        backend, auto_precision = auto_choice()
        precision = precision or auto_precision
    cls = backend_class(backend)
    if not is_available(backend):
        from edge_sameo.errors import MissingDependencyError

        extra = {"tensorrt": "trt", "openvino": "openvino"}.get(backend, backend)
        what = "TensorRT and a CUDA GPU" if backend == "tensorrt" else backend
        raise MissingDependencyError(
            f"backend {backend!r} needs {what}: pip install 'edge-sameo[{extra}]'"
        )
    precision = precision or cls.precisions[0]
    # Each runtime's constructor takes its own source (a model, or an export folder).
    factory: Callable[..., Backend] = cls
    if backend == "torch":
        if is_export:
            raise InputError("the torch backend needs a checkpoint or model, not an export folder")
        return factory(_as_model(source), precision, **options)
    if isinstance(source, (str, Path)) and is_export:
        return factory(Path(source), precision, **options)
    return factory(export_dir_for(_as_model(source)), precision, **options)

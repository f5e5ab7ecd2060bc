"""Choosing and creating runtimes: ``create_backend(source, backend, precision)``.

``source`` is a model (``EfficientSam``), a checkpoint path, or an export folder
(``contract.json`` + ONNX graphs). ONNX runtimes given a model use its export in a cache
folder keyed by the weights (``$EDGE_SAMEO_CACHE``, default ``~/.cache/edge-sameo``).

The runtime only loads exports and engines. Making them on demand is handed in by the
caller: ``export`` writes a model's export (the CLI passes
``edge_sameo.engines.export.export_to``) and ``build`` builds TensorRT engines
(:class:`~edge_sameo.backends.tensorrt_backend.EngineBuild`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edge_sameo.backends.base import Backend
from edge_sameo.checkpoint import weights_digest
from edge_sameo.contract import CONTRACT_FILE
from edge_sameo.errors import InputError
from edge_sameo.modeling import EfficientSam

if TYPE_CHECKING:
    from edge_sameo.backends.tensorrt_backend import EngineBuild

log = logging.getLogger(__name__)

#: Writes the export of a model (ONNX graphs + ``contract.json``) into a folder.
Export = Callable[[EfficientSam, Path], object]

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
    from edge_sameo.backends.tensorrt_loader import load_tensorrt
    from edge_sameo.errors import MissingDependencyError

    try:  # tensorrt-stubs alone import as an empty package
        load_tensorrt()
    except MissingDependencyError:
        return False
    return True


def auto_choice() -> tuple[str, str]:
    """(backend, precision) expected fastest here, by the order measured in
    docs/BENCHMARKS.md: GPU -> TensorRT fp16, else torch CUDA fp16; CPU -> OpenVINO at its
    default precision (bf16 where it is faster than fp32, for the encoder and the refiner:
    :meth:`~edge_sameo.backends.openvino_backend.OpenVINOBackend.default_options`), else ONNX
    Runtime fp32, else torch."""
    if torch.cuda.is_available():
        return ("tensorrt", "fp16") if is_available("tensorrt") else ("torch", "fp16")
    if is_available("openvino"):
        return ("openvino", backend_class("openvino").default_precision())
    if is_available("onnxruntime"):
        return ("onnxruntime", "fp32")
    return ("torch", "fp32")


def cache_root() -> Path:
    return Path(os.environ.get("EDGE_SAMEO_CACHE", Path.home() / ".cache" / "edge-sameo"))


#: Revision of the exported graphs for the same weights: bumped when the export writes
#: other graphs (2: the decoder's few-query attention, 2026-12-08), so a cached export from
#: an earlier version is not reused.
GRAPH_REVISION = 2


def cached_export_dir(model: EfficientSam) -> Path:
    """Where the export cache keeps ``model``'s export (keyed by its configs and weights
    and :data:`GRAPH_REVISION`); the folder may not exist yet."""
    return cache_root() / "exports" / f"{weights_digest(model)}-r{GRAPH_REVISION}"


def export_dir_for(model: EfficientSam, export: Export | None = None) -> Path:
    """The cached export folder of a model; on first use ``export`` writes it there, and
    without ``export`` that is an :class:`InputError` saying how to export."""
    return _exported(model, cached_export_dir(model), export)


def _exported(model: EfficientSam, directory: Path, export: Export | None) -> Path:
    """``directory`` (the model's cached export folder) once it holds the export."""
    if not (directory / CONTRACT_FILE).is_file():
        if export is None:
            raise InputError(
                f"this model has no export in {directory}: export it (edge-sameo export "
                "--model CHECKPOINT --out DIR) and pass DIR, or pass export= to export it here"
            )
        export(model, directory)
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
    *,
    export: Export | None = None,
    build: EngineBuild | None = None,
    **options: Any,
) -> Backend:
    """Create a runtime for ``source`` (model, checkpoint path or export folder).

    ``backend="auto"`` picks the fastest available (see :func:`auto_choice`);
    ``precision=None`` takes the runtime's default (``Backend.default_precision`` with its
    ``default_options``).
    ``export``: writes a model's export when an ONNX runtime needs one not cached yet
    (:func:`export_dir_for`); ``build``: builds TensorRT engines missing from the engine cache
    (:class:`~edge_sameo.backends.tensorrt_backend.TensorRTBackend`). Without them only
    what exists already is loaded.
    """
    is_export = isinstance(source, (str, Path)) and (Path(source) / CONTRACT_FILE).is_file()
    model = None if is_export else _as_model(source)
    directory: Path | None = None  # the model's cached export folder, once looked up
    auto_precision: str | None = None
    if backend == "auto":
        backend, auto_precision = auto_choice()
        if model is not None and backend != "torch" and export is None:
            directory = cached_export_dir(model)
            if not (directory / CONTRACT_FILE).is_file():
                # Nothing to load for an ONNX runtime and nothing handed to export with: the
                # runtime that needs no export (pass export=, e.g. **on_demand(), for the
                # others).
                log.info(
                    "auto: no export of this model is cached and no exporter was given; "
                    "running it on torch (edge_sameo.engines.on_demand exports it on first use)"
                )
                backend, auto_precision = "torch", "fp32"
    cls = backend_class(backend)
    if not is_available(backend):
        from edge_sameo.errors import MissingDependencyError

        extra = {"tensorrt": "trt", "openvino": "openvino"}.get(backend, backend)
        what = "TensorRT and a CUDA GPU" if backend == "tensorrt" else backend
        raise MissingDependencyError(
            f"backend {backend!r} needs {what}: pip install 'edge-sameo[{extra}]'"
        )
    if precision is None:  # the runtime's default, with its per-stage settings
        precision = auto_precision or cls.default_precision()
        options = {**cls.default_options(precision), **options}
    # Each runtime's constructor takes its own source (a model, or an export folder).
    factory: Callable[..., Backend] = cls
    if backend == "torch":
        if is_export:
            raise InputError("the torch backend needs a checkpoint or model, not an export folder")
        assert model is not None
        return factory(model, precision, **options)
    if backend == "tensorrt":
        options = {**options, "build": build}
    if isinstance(source, (str, Path)) and is_export:
        return factory(Path(source), precision, **options)
    assert model is not None
    directory = _exported(model, directory or cached_export_dir(model), export)
    return factory(directory, precision, **options)

"""The one place ``tensorrt`` is imported, on first use: by the TensorRT runtime, by the
registry's availability check and by the engine builder."""

from __future__ import annotations

from types import ModuleType

from edge_sameo.errors import MissingDependencyError

TRT_EXTRA = "pip install 'edge-sameo[trt]'"


def load_tensorrt() -> ModuleType:
    """Import the real ``tensorrt`` or raise :class:`MissingDependencyError`.

    ``tensorrt-stubs`` (installed for type checking) makes ``import tensorrt`` succeed as
    an empty namespace package, so the import alone proves nothing: check for ``Builder``.
    """
    import importlib

    try:
        tensorrt = importlib.import_module("tensorrt")
    except ImportError:
        raise MissingDependencyError(f"tensorrt is not installed: {TRT_EXTRA}") from None
    if not hasattr(tensorrt, "Builder"):
        raise MissingDependencyError(
            f"tensorrt is not installed (only its type stubs are): {TRT_EXTRA}"
        )
    return tensorrt

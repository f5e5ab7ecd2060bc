"""What lets a runtime make a missing export or TensorRT engine on first use. The runtime
(``edge_sameo.backends``) only loads; the command line, and Python users who want the same,
hand it these builders::

    from edge_sameo import AmodalPredictor
    from edge_sameo.engines.on_demand import on_demand

    predictor = AmodalPredictor("checkpoint.pt", backend="openvino", **on_demand())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from edge_sameo.backends.registry import Export
    from edge_sameo.backends.tensorrt_backend import EngineBuild


class OnDemand(TypedDict):
    """Keywords of :func:`~edge_sameo.backends.registry.create_backend`,
    :class:`~edge_sameo.AmodalPredictor` (and ``bench``'s runners): ``export`` writes a
    model's ONNX export into the export cache, ``build`` builds TensorRT engines into the
    engine cache."""

    export: Export
    build: EngineBuild


def on_demand() -> OnDemand:
    """The exporter and the engine builder, for ``create_backend(..., **on_demand())``."""
    from edge_sameo.engines.export import export_to
    from edge_sameo.engines.tensorrt_build import build_for_runtime

    return {"export": export_to, "build": build_for_runtime}

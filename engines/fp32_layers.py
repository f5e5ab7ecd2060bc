"""Which layers stay FP32 when TensorRT builds at reduced precision with builder flags (the
builder pins them through layer precision constraints).

Layers are found by their names, which come from the ONNX node names, i.e. the torch module
paths of the export. Pure: no TensorRT here; the builder turns its network's layers into
:class:`LayerInfo` rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Layer groups that may be pinned to FP32 (see :func:`select_fp32_layers`).
KEEP_FP32_CHOICES = ("LayerNorm", "Softmax", "Add")
#: LayerNorm overflows and Softmax loses its small probabilities in FP16 (ViT encoders);
#: residual Adds are opt-in: pinning them breaks GEMM-epilogue fusion (slower).
DEFAULT_KEEP_FP32 = ("LayerNorm", "Softmax")

_LN_TYPES = {"NORMALIZATION", "REDUCE", "ELEMENTWISE", "UNARY"}
_RESIDUAL_ADD = re.compile(r"/(blocks|layers)\.\d+/Add(_\d+)?$")


def _scope(name: str) -> str:
    return name.rsplit("/", 1)[0]


def _op(name: str) -> str:
    return name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class LayerInfo:
    """A network layer as :func:`select_fp32_layers` sees it (``kind``: LayerType name)."""

    index: int
    name: str
    kind: str


def select_fp32_layers(layers: Sequence[LayerInfo], keep: Sequence[str]) -> dict[int, str]:
    """Layer index -> group (``"LayerNorm"``/``"Softmax"``/``"Add"``) of layers to pin to FP32.

    * LayerNorm: ``NORMALIZATION`` layers (opset >= 17), and every reduce/elementwise/unary
      layer in a module scope that holds the decomposed form (a ``ReduceMean`` and a
      ``Sqrt``: opset < 17, and the neck's LayerNorm2d).
    * Softmax: ``SOFTMAX`` layers.
    * Add: elementwise ``Add`` layers directly in a transformer block (``blocks.N`` /
      ``layers.N``): the residual connections.
    """
    ln_scopes = set()
    if "LayerNorm" in keep:
        ops_by_scope: dict[str, set[str]] = {}
        for layer in layers:
            ops_by_scope.setdefault(_scope(layer.name), set()).add(
                re.sub(r"_\d+$", "", _op(layer.name))
            )
        ln_scopes = {s for s, ops in ops_by_scope.items() if {"ReduceMean", "Sqrt"} <= ops}
    chosen: dict[int, str] = {}
    for layer in layers:
        if "LayerNorm" in keep and (
            layer.kind == "NORMALIZATION"
            or (layer.kind in _LN_TYPES and _scope(layer.name) in ln_scopes)
        ):
            chosen[layer.index] = "LayerNorm"
        elif "Softmax" in keep and layer.kind == "SOFTMAX":
            chosen[layer.index] = "Softmax"
        elif "Add" in keep and layer.kind == "ELEMENTWISE" and _RESIDUAL_ADD.search(layer.name):
            chosen[layer.index] = "Add"
    return chosen

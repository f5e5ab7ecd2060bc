"""Which nodes stay float in every reduced-precision variant (fp16 and int8 alike).

Node names come from the export (``torch.onnx`` scopes = module paths), so a pattern
names a module of ``edge_sameo.modeling``: it survives re-exports and weight changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import onnx

#: The decoder's last layers and the prompt encoder. The hypernetwork MLPs and the final
#: ``hyper_in @ upscaled`` product set the mask logits directly, the IoU head sets the
#: mask choice, the upscaling convs feed every mask pixel; the prompt encoder turns box
#: coordinates into sin/cos of large arguments, where a rounding error moves the box.
DECODER_HEAD_PATTERNS: tuple[str, ...] = (
    r"/output_hypernetworks_mlps",
    r"/iou_prediction_head",
    r"/final_output_upscaling_layers",
    r"^/(mask|modal)_decoder/MatMul(_\d+)?$",
    r"^/prompt_encoder/",
)
#: The refiner's 1×1 output convolution: it sets the final mask logits directly (a pixel
#: flips at logit 0) and costs next to nothing; its 3×3 convolutions are where INT8 pays.
REFINER_HEAD_PATTERNS: tuple[str, ...] = (r"^/refiner/head/",)
#: What every reduced-precision variant keeps float by default (each graph matches its own).
KEEP_FLOAT_PATTERNS: tuple[str, ...] = DECODER_HEAD_PATTERNS + REFINER_HEAD_PATTERNS


def compile_patterns(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    """Compile node-name regexes; raise ``ValueError`` naming a bad one."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise ValueError(f"bad node-name pattern {p!r}: {exc}") from None
    return out


def matching_nodes(model: onnx.ModelProto, patterns: Iterable[str]) -> list[str]:
    """Names of the nodes of ``model`` whose name matches (``re.search``) any pattern."""
    compiled = compile_patterns(patterns)
    return [
        n.name
        for n in model.graph.node
        if n.name and n.op_type != "Constant" and any(c.search(n.name) for c in compiled)
    ]

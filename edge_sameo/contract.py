"""The one ONNX/engine I/O contract: tensor names, dtypes, shapes, dynamic axes, profiles.

Export, engine building, every runtime and the tests import these definitions; the
contract is also written as ``contract.json`` beside the exported graphs.

Encoder input is **float32 pixels in [0, 1], already resized to S×S** (NCHW), with the
ImageNet normalisation folded into the graph. Why not uint8: EfficientSAM resizes the
*float* image (``/255`` first, then bilinear), and a uint8 resize rounds every pixel
(up to 0.003 off, measured) — the contract keeps the original numerics exactly, and the
host resize (OpenCV on float32, equal to torch's bilinear to 1e-7) stays outside so one
static-shape engine serves every camera resolution. The 4× larger host-to-device copy
(12 MB at 1024²) costs well under a millisecond on PCIe and nothing on Jetson's shared
memory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_sameo.modeling import ModelConfig, RefinerConfig
from edge_sameo.precision import ONNX_PRECISIONS, check_precision

CONTRACT_VERSION = 1
CONTRACT_FILE = "contract.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
REFINER_FILE = "refiner.onnx"

# Tensor names: the single source of truth.
PIXELS = "pixels"
IMAGE_EMBEDDINGS = "image_embeddings"
BOXES = "boxes"
LOW_RES_LOGITS = "low_res_logits"
IOU_PREDICTIONS = "iou_predictions"
MODAL_LOW_RES_LOGITS = "modal_low_res_logits"
MODAL_IOU_PREDICTIONS = "modal_iou_predictions"
CROPS = "crops"
REFINED_LOGITS = "refined_logits"
#: Symbolic name of the dynamic box axis.
NUM_BOXES = "num_boxes"

#: Sidecar beside the graphs: what was kept float and which data calibrated each variant.
CALIB_META_FILE = "calib_meta.json"

DEFAULT_OPSET = 17
#: Optimisation profile of the box axis: (min, opt, max).
DEFAULT_BOX_PROFILE = (1, 8, 64)


def precision_onnx_name(graph_file: str, precision: str) -> str:
    """``("encoder.onnx", "int8") -> "encoder.int8.onnx"``; fp32 returns ``graph_file``.
    The fp32 export and its precision variants (``calib`` writes them) sit side by side."""
    from edge_sameo.errors import InputError

    check_precision(precision, ONNX_PRECISIONS)
    if not graph_file.endswith(".onnx"):
        raise InputError(f"{graph_file!r} is not an .onnx file name")
    if precision == "fp32":
        return graph_file
    return f"{graph_file[: -len('.onnx')]}.{precision}.onnx"


def precision_onnx_path(directory: str | Path, graph_file: str, precision: str) -> Path:
    """``directory / precision_onnx_name(graph_file, precision)``."""
    return Path(directory) / precision_onnx_name(graph_file, precision)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input/output. ``shape`` holds ints or the name of a dynamic axis."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    doc: str = ""

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """Axis index -> name of each dynamic axis, e.g. ``{0: "num_boxes"}``."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete(self, **dims: int) -> tuple[int, ...]:
        """The shape with dynamic axes replaced by ``dims`` (e.g. ``num_boxes=8``)."""
        return tuple(d if isinstance(d, int) else dims[d] for d in self.shape)


@dataclass(frozen=True)
class GraphContract:
    """Inputs, outputs and TensorRT shape profiles of one exported graph."""

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: dynamic axis name -> (min, opt, max)
    profiles: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for axis, (lo, opt, hi) in self.profiles.items():
            if not 1 <= lo <= opt <= hi:
                raise ValueError(f"profile {axis}: need 1 <= min <= opt <= max, got {lo, opt, hi}")

    def input(self, name: str) -> TensorSpec:
        """The input named ``name`` (``StopIteration`` when there is none)."""
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        """The output named ``name`` (``StopIteration`` when there is none)."""
        return next(t for t in self.outputs if t.name == name)

    @property
    def input_names(self) -> list[str]:
        """Input names in graph order."""
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names in graph order."""
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The ``dynamic_axes`` argument of ``torch.onnx.export``."""
        return {t.name: t.dynamic_axes for t in self.inputs + self.outputs if t.dynamic_axes}

    def profile_shapes(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) concrete shapes of input ``name`` for a TensorRT profile."""
        spec = self.input(name)
        picks = [{axis: p[i] for axis, p in self.profiles.items()} for i in range(3)]
        lo, opt, hi = (spec.concrete(**pick) for pick in picks)
        return lo, opt, hi


def encoder_contract(cfg: ModelConfig) -> GraphContract:
    """Encoder graph: pixels (1, 3, S, S) float32 RGB in [0, 1], resized to S×S ->
    image embeddings (1, C, G, G) float32 (S = ``img_size``, G = ``grid_size``)."""
    s, g = cfg.img_size, cfg.grid_size
    return GraphContract(
        name="encoder",
        file=ENCODER_FILE,
        inputs=(
            TensorSpec(PIXELS, "float32", (1, 3, s, s), "RGB in [0, 1], resized straight to S×S"),
        ),
        outputs=(TensorSpec(IMAGE_EMBEDDINGS, "float32", (1, cfg.embed_dim, g, g)),),
    )


def decoder_contract(
    cfg: ModelConfig,
    *,
    modal: bool = False,
    box_profile: tuple[int, int, int] = DEFAULT_BOX_PROFILE,
) -> GraphContract:
    """Decoder graph: embedding + N boxes -> 3 candidates per box (+ the modal head)."""
    g, lr, m = cfg.grid_size, cfg.low_res_size, cfg.num_multimask_outputs
    heads = [(LOW_RES_LOGITS, IOU_PREDICTIONS)]
    if modal:
        heads.append((MODAL_LOW_RES_LOGITS, MODAL_IOU_PREDICTIONS))
    outputs: list[TensorSpec] = []
    for logits, iou in heads:
        outputs.append(TensorSpec(logits, "float32", (NUM_BOXES, m, lr, lr), "unsorted candidates"))
        outputs.append(TensorSpec(iou, "float32", (NUM_BOXES, m)))
    return GraphContract(
        name="decoder",
        file=DECODER_FILE,
        inputs=(
            TensorSpec(IMAGE_EMBEDDINGS, "float32", (1, cfg.embed_dim, g, g)),
            TensorSpec(BOXES, "float32", (NUM_BOXES, 4), "XYXY in S×S model-input pixels"),
        ),
        outputs=tuple(outputs),
        profiles={NUM_BOXES: box_profile},
    )


def refiner_contract(
    cfg: RefinerConfig, box_profile: tuple[int, int, int] = DEFAULT_BOX_PROFILE
) -> GraphContract:
    """Refiner graph: one crop per box (``edge_sameo.refine.crop_inputs``) -> amodal and
    visible logits in that crop."""
    r = cfg.crop
    return GraphContract(
        name="refiner",
        file=REFINER_FILE,
        inputs=(
            TensorSpec(
                CROPS,
                "float32",
                (NUM_BOXES, cfg.in_channels, r, r),
                "per box: RGB, prompt box, decoder logits[, the other boxes' visible logits] "
                "(edge_sameo.refine.crop_inputs)",
            ),
        ),
        outputs=(TensorSpec(REFINED_LOGITS, "float32", (NUM_BOXES, 2, r, r), "amodal, visible"),),
        profiles={NUM_BOXES: box_profile},
    )


@dataclass(frozen=True)
class ExportContract:
    """Everything a runtime needs to know about a set of exported graphs."""

    model: ModelConfig
    encoder: GraphContract
    decoder: GraphContract
    opset: int
    precision: str = "fp32"
    sha256: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: The object-resolution refiner's graph and config, when the model has one.
    refiner: GraphContract | None = None
    refiner_config: RefinerConfig | None = None

    def __post_init__(self) -> None:
        if (self.refiner is None) != (self.refiner_config is None):
            raise ValueError("a refiner graph and its config come together")

    @property
    def has_modal(self) -> bool:
        """Whether the decoder graph also has the modal (visible-mask) head."""
        return MODAL_LOW_RES_LOGITS in self.decoder.output_names

    @property
    def has_refiner(self) -> bool:
        """Whether the export includes the refiner graph."""
        return self.refiner is not None

    @property
    def graphs(self) -> tuple[GraphContract, ...]:
        """Every graph of the export: encoder, decoder (and refiner)."""
        return (self.encoder, self.decoder) + ((self.refiner,) if self.refiner else ())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written as ``contract.json`` (with a note on preprocessing)."""
        return {
            "version": CONTRACT_VERSION,
            "model": self.model.to_dict(),
            "encoder": asdict(self.encoder),
            "decoder": asdict(self.decoder),
            "opset": self.opset,
            "precision": self.precision,
            "sha256": dict(self.sha256),
            "extra": dict(self.extra),
            "refiner": None if self.refiner is None else asdict(self.refiner),
            "refiner_config": None
            if self.refiner_config is None
            else self.refiner_config.to_dict(),
            "preprocess": "pixels = resize(rgb_uint8 / 255, SxS, bilinear, half-pixel); "
            "normalisation (ImageNet mean/std) is inside the encoder graph",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportContract:
        """Parse :meth:`to_dict`'s form; ``ValueError`` on another contract version."""
        if d.get("version") != CONTRACT_VERSION:
            raise ValueError(f"contract version {d.get('version')!r} is not supported")

        def graph(g: dict[str, Any]) -> GraphContract:
            def spec(t: dict[str, Any]) -> TensorSpec:
                return TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), t.get("doc", ""))

            return GraphContract(
                name=g["name"],
                file=g["file"],
                inputs=tuple(spec(t) for t in g["inputs"]),
                outputs=tuple(spec(t) for t in g["outputs"]),
                profiles={k: (v[0], v[1], v[2]) for k, v in g.get("profiles", {}).items()},
            )

        return cls(
            model=ModelConfig.from_dict(d["model"]),
            encoder=graph(d["encoder"]),
            decoder=graph(d["decoder"]),
            opset=int(d["opset"]),
            precision=str(d.get("precision", "fp32")),
            sha256=dict(d.get("sha256", {})),
            extra=dict(d.get("extra", {})),
            refiner=graph(d["refiner"]) if d.get("refiner") else None,
            refiner_config=(
                RefinerConfig.from_dict(d["refiner_config"]) if d.get("refiner_config") else None
            ),
        )

    def write(self, directory: str | Path) -> Path:
        """Write ``contract.json`` into ``directory`` atomically; return its path."""
        from edge_sameo.io import atomic_write_json

        path = Path(directory) / CONTRACT_FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, directory: str | Path) -> ExportContract:
        """Load ``directory/contract.json``; :class:`~edge_sameo.errors.InputError` when it
        is missing or malformed."""
        from edge_sameo.errors import InputError

        path = Path(directory) / CONTRACT_FILE
        if not path.is_file():
            raise InputError(f"no {CONTRACT_FILE} in {directory}: not an edge-sameo export folder")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: malformed contract ({exc})") from None

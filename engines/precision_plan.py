"""How each graph becomes an engine of a precision: which ONNX file, which network kind,
which builder flags. Pure (no TensorRT): the installed TensorRT is described by a
:class:`TrtFeatures`, found by attribute, never by version strings.

Two routes:

* **flags** (TensorRT 8.6 / 10.x): a weakly typed network from the fp32 graph with the
  ``FP16`` / ``INT8`` builder flags; LayerNorm / Softmax (optionally residual Add) layers
  are pinned to FP32 through layer precision constraints (:mod:`.fp32_layers`); INT8 scales
  come from the legacy entropy calibrator (:mod:`.calibrator`) — or, when the Q/DQ graph
  ``<graph>.int8.onnx`` exists and TensorRT has no strongly typed networks (8.6), from its
  Q/DQ nodes (explicit quantization).
* **typed** (TensorRT >= 10 with ``STRONGLY_TYPED``; the only route on TensorRT 11, which
  removed the precision flags and calibrators): a strongly typed network from a graph that
  carries its precision — ``<graph>.fp16.onnx`` (FP16 casts) or ``<graph>.int8.onnx``
  (Q/DQ), written by ``edge-sameo calibrate`` (file names:
  :func:`edge_sameo.contract.precision_onnx_path`). A plain fp32 graph cannot become
  FP16/INT8 on this route: that is refused with a message naming the file.

The typed route is taken wherever TensorRT has strongly typed networks and the graph
carries its precision; the flags route otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edge_sameo.backends.engine_cache import ONNX_FILE_OPTION
from edge_sameo.contract import GraphContract, precision_onnx_path
from edge_sameo.errors import InputError

if TYPE_CHECKING:
    from edge_sameo.engines.tensorrt_build import BuildConfig

#: The builder flag that makes TensorRT honour the FP32 pins where it has an FP32 kernel.
PRECISION_CONSTRAINTS = "PREFER_PRECISION_CONSTRAINTS"


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed TensorRT offers, found by attribute, not by version."""

    version: str
    #: ``BuilderFlag.FP16``/``INT8`` exist (TensorRT <= 10; removed in 11)
    precision_flags: bool
    #: ``IInt8EntropyCalibrator2`` and ``IBuilderConfig.int8_calibrator`` (<= 10; gone in 11)
    calibrators: bool
    #: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (>= 10; always on in 11)
    strongly_typed: bool
    #: ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` (required on 8.x, ignored on 10)
    explicit_batch_flag: bool

    @classmethod
    def detect(cls, trt: ModuleType) -> TrtFeatures:
        flags, net = trt.BuilderFlag, trt.NetworkDefinitionCreationFlag
        return cls(
            version=str(getattr(trt, "__version__", "unknown")),
            precision_flags=hasattr(flags, "FP16") and hasattr(flags, "INT8"),
            calibrators=hasattr(trt, "IInt8EntropyCalibrator2")
            and hasattr(trt.IBuilderConfig, "int8_calibrator"),
            strongly_typed=hasattr(net, "STRONGLY_TYPED"),
            explicit_batch_flag=hasattr(net, "EXPLICIT_BATCH"),
        )


def onnx_precision(path: Path) -> str:
    """``"int8"`` for a graph with Q/DQ nodes, ``"fp16"`` for one with FP16 casts, FP16
    weights or FP16 I/O, else ``"fp32"`` (the plain export). Weights are not loaded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    ops = {n.op_type for n in graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if any(i.data_type == fp16 for i in graph.initializer):
        return "fp16"
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute):
            return "fp16"
    if any(v.type.tensor_type.elem_type == fp16 for v in (*graph.input, *graph.output)):
        return "fp16"
    return "fp32"


@dataclass(frozen=True)
class PrecisionPlan:
    """How one graph is built: which ONNX file, which network kind and builder flags."""

    graph: str
    precision: str
    onnx: Path
    #: strongly typed network (precision from the graph) instead of builder flags
    typed: bool
    #: ``BuilderFlag`` member names to set
    flags: tuple[str, ...] = ()
    keep_fp32: tuple[str, ...] = ()
    #: run the legacy entropy calibrator
    calibrate: bool = False

    def describe(self) -> str:
        if self.typed:
            how = "strongly typed network (precision carried by the graph)"
        else:
            how = "builder flags " + ("+".join(self.flags) if self.flags else "none (fp32)")
            if self.keep_fp32:
                how += f", FP32 kept for {'/'.join(self.keep_fp32)}"
            if self.calibrate:
                how += ", entropy calibration"
        return f"{self.onnx.name} -> {self.precision}: {how}"

    def options(self) -> dict[str, Any]:
        """The plan's part of the engine cache key."""
        return {
            ONNX_FILE_OPTION: self.onnx.name,
            "typed": self.typed,
            "flags": list(self.flags),
            "keep_fp32": list(self.keep_fp32),
        }


def plan_precision(
    graph: GraphContract, cfg: BuildConfig, features: TrtFeatures, *, calibration: bool = False
) -> PrecisionPlan:
    """Pick the ONNX file and route for ``graph`` at ``cfg.precision`` (pure: no TensorRT).

    ``calibration``: calibration feeds or an existing calibration cache are available.
    Raises :class:`InputError` with what to produce when no route exists.
    """
    plain = cfg.onnx_dir / graph.file
    if cfg.precision == "fp32":
        if not plain.is_file():
            raise InputError(f"missing {plain}: run edge-sameo export first")
        # No flags: fp32 (TF32 allowed, TensorRT's default). Without precision flags
        # (TensorRT 11) networks are strongly typed, and the fp32 graph is typed fp32.
        return PrecisionPlan(graph.name, "fp32", plain, typed=not features.precision_flags)

    variant = precision_onnx_path(cfg.onnx_dir, graph.file, cfg.precision)
    low = {"fp16": ("FP16",), "int8": ("INT8", "FP16")}[cfg.precision]
    keep_flags = (PRECISION_CONSTRAINTS,) if cfg.keep_fp32 else ()
    if variant.is_file():
        found = onnx_precision(variant)
        if found != cfg.precision:
            what = (
                "Q/DQ (QuantizeLinear/DequantizeLinear) nodes"
                if cfg.precision == "int8"
                else "FP16 casts or weights"
            )
            raise InputError(
                f"{variant} has no {what} (it reads as a {found} graph): "
                f"re-run edge-sameo calibrate --onnx {cfg.onnx_dir} --precision {cfg.precision}"
            )
        if features.strongly_typed:
            return PrecisionPlan(graph.name, cfg.precision, variant, typed=True)
        if not features.precision_flags:
            raise InputError(
                f"TensorRT {features.version} has neither strongly typed networks nor "
                "precision builder flags"
            )
        # Explicit quantization on the flags route: the Q/DQ scales replace calibration.
        return PrecisionPlan(
            graph.name, cfg.precision, variant, False, low + keep_flags, cfg.keep_fp32
        )

    if not features.precision_flags:
        raise InputError(
            f"TensorRT {features.version} builds strongly typed networks only (no FP16/INT8 "
            f"builder flags, no calibrators): {cfg.precision} needs {variant.name} ("
            + ("Q/DQ" if cfg.precision == "int8" else "FP16 casts")
            + f") beside {graph.file}, and a plain fp32 graph cannot be used; produce it with "
            f"edge-sameo calibrate --onnx {cfg.onnx_dir} --precision {cfg.precision}"
        )
    if not plain.is_file():
        raise InputError(f"missing {plain}: run edge-sameo export first")
    if cfg.precision == "fp16":
        return PrecisionPlan(graph.name, "fp16", plain, False, low + keep_flags, cfg.keep_fp32)
    if not features.calibrators:
        raise InputError(
            f"TensorRT {features.version} has no INT8 calibrators: int8 needs {variant.name} "
            f"(Q/DQ) from edge-sameo calibrate --onnx {cfg.onnx_dir} --precision int8"
        )
    if not calibration:
        raise InputError(
            f"int8 {graph.name}: TensorRT's calibrator needs calibration feeds or an existing "
            f"calibration cache ({cfg.calib_cache_file(graph.name)}); or produce {variant.name} "
            f"(Q/DQ) with edge-sameo calibrate --onnx {cfg.onnx_dir} --precision int8"
        )
    return PrecisionPlan(
        graph.name, "int8", plain, False, low + keep_flags, cfg.keep_fp32, calibrate=True
    )

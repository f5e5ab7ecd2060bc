"""Build TensorRT engines from the exported ONNX graphs (NVIDIA samples' ``EngineBuilder``).

Precision routes, chosen by feature detection on the installed ``tensorrt`` (never by
version strings) — see :func:`plan_precision`:

* **flags** (TensorRT 8.6 / 10.x): a weakly typed network from the fp32 graph with the
  ``FP16`` / ``INT8`` builder flags; LayerNorm / Softmax (optionally residual Add) layers
  are pinned to FP32 through layer precision constraints; INT8 scales come from the legacy
  entropy calibrator (calibration feeds and/or a calibration cache) — or, when the Q/DQ
  graph ``<graph>.int8.onnx`` exists, from its Q/DQ nodes (explicit quantization).
* **typed** (TensorRT >= 10 with ``STRONGLY_TYPED``; the only route on TensorRT 11, which
  removed the precision flags and calibrators): a strongly typed network from a graph that
  carries its precision — ``<graph>.fp16.onnx`` (FP16 casts) or ``<graph>.int8.onnx``
  (Q/DQ), written by ``calib`` (file names: :mod:`calib.naming`). A plain fp32 graph
  cannot become FP16/INT8 on this route: that is refused with a message naming the file.

``tensorrt`` is imported only inside functions; importing this module is cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.cuda_memory import CudaStream, DeviceArray
from edge_sameo.calib.naming import precision_onnx_path
from edge_sameo.contract import ExportContract, GraphContract
from edge_sameo.engines.engine_cache import EngineCache, EngineKey, PlatformFacts, file_sha256
from edge_sameo.errors import EdgeSameoError, InputError, MissingDependencyError
from edge_sameo.io import atomic_write_bytes

# TensorRT objects are typed Any: tensorrt-stubs 10.13 cannot be read by mypy (its
# tensorrt/ has no py.typed, and its .pyi has syntax errors: parameters named ``in``).
TrtNetwork = Any  # tensorrt.INetworkDefinition
TrtConfig = Any  # tensorrt.IBuilderConfig
TrtParser = Any  # tensorrt.OnnxParser
TrtProfile = Any  # tensorrt.IOptimizationProfile

PRECISIONS = ("fp32", "fp16", "int8")
#: What ``BuildConfig.graphs`` selects: every graph of the export, one of them, or
#: ``both`` (encoder and decoder: the meaning it had before exports could carry a refiner).
GRAPHS = ("all", "both", "encoder", "decoder", "refiner")
_SELECTED = {"all": ("encoder", "decoder", "refiner"), "both": ("encoder", "decoder")}
ROUTES = ("auto", "flags", "typed")
#: Layer groups that may be pinned to FP32 on the flags route (see :func:`select_fp32_layers`).
KEEP_FP32_CHOICES = ("LayerNorm", "Softmax", "Add")
#: LayerNorm overflows and Softmax loses its small probabilities in FP16 (ViT encoders);
#: residual Adds are opt-in: pinning them breaks GEMM-epilogue fusion (slower).
DEFAULT_KEEP_FP32 = ("LayerNorm", "Softmax")
TRT_EXTRA = "pip install 'edge-sameo[trt]'"

#: One calibration feed: input name -> array of the shape the engine's profile takes.
Feeds = Mapping[str, NDArray[Any]]


class EngineBuildError(EdgeSameoError):
    """TensorRT could not parse or build a graph (the message lists the parser errors)."""


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


@dataclass(frozen=True)
class BuildConfig:
    """What ``edge-sameo build`` does; every CLI flag maps onto a field.

    ``calibration_feeds``: for INT8 on the flags route without a Q/DQ graph, the feeds of
    TensorRT's entropy calibrator: a mapping graph name -> iterable of :data:`Feeds`
    (``{"encoder": batcher.encoder_feeds(), "decoder": batcher.decoder_feeds(ort),
    "refiner": batcher.refiner_feeds(backend)}``), or one iterable used for every graph
    built (then pass a re-iterable, not a generator, when building several). Boxes and
    crops are cycled/cut to the profile's opt count (TensorRT calibrates at the
    calibration profile's opt shape).
    """

    onnx_dir: Path
    precision: str = "fp16"
    #: Engines (and their sidecars) go here; default: beside the ONNX graphs.
    out_dir: Path | None = None
    graphs: str = "all"
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    max_aux_streams: int | None = None
    #: Folder of the calibration caches (``<graph>.int8.calib``); default: ``engine_dir``.
    calib_cache: Path | None = None
    calibration_feeds: Mapping[str, Iterable[Feeds]] | Iterable[Feeds] | None = field(
        default=None, repr=False, compare=False
    )
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32
    #: OBEY (fail when no FP32 kernel exists) instead of PREFER precision constraints.
    obey_precision: bool = False
    route: str = "auto"
    rebuild: bool = False

    def __post_init__(self) -> None:
        for name in ("onnx_dir", "out_dir", "timing_cache", "calib_cache"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "keep_fp32", tuple(self.keep_fp32))
        if self.precision not in PRECISIONS:
            raise InputError(
                f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )
        if self.graphs not in GRAPHS:
            raise InputError(f"graphs must be one of {', '.join(GRAPHS)}, not {self.graphs!r}")
        if self.route not in ROUTES:
            raise InputError(f"route must be one of {', '.join(ROUTES)}, not {self.route!r}")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise InputError(f"--workspace must be >= 1 MiB, got {self.workspace_mib}")
        if self.max_aux_streams is not None and self.max_aux_streams < 0:
            raise InputError(f"--max-aux-streams must be >= 0, got {self.max_aux_streams}")
        unknown = [k for k in self.keep_fp32 if k not in KEEP_FP32_CHOICES]
        if unknown:
            raise InputError(
                f"cannot keep {', '.join(map(repr, unknown))} in FP32; "
                f"choose from {', '.join(KEEP_FP32_CHOICES)}"
            )

    @property
    def engine_dir(self) -> Path:
        return self.out_dir if self.out_dir is not None else self.onnx_dir

    def selected(self, contract: ExportContract) -> tuple[GraphContract, ...]:
        """The graphs of ``contract`` to build; :class:`InputError` when the one asked for
        is not part of the export (a refiner for a model without one)."""
        names = _SELECTED.get(self.graphs, (self.graphs,))
        graphs = tuple(g for g in contract.graphs if g.name in names)
        if not graphs:
            raise InputError(f"this export has no {self.graphs} graph")
        return graphs

    def feeds_for(self, graph: str) -> Iterable[Feeds] | None:
        feeds = self.calibration_feeds
        if isinstance(feeds, Mapping):
            return feeds.get(graph)
        return feeds

    def calib_cache_file(self, graph: str) -> Path:
        return (self.calib_cache or self.engine_dir) / f"{graph}.int8.calib"


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
            "onnx_file": self.onnx.name,
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
        typed = cfg.route == "typed" or not features.precision_flags
        return PrecisionPlan(graph.name, "fp32", plain, typed=typed)

    variant = precision_onnx_path(cfg.onnx_dir, graph.file, cfg.precision)
    low = {"fp16": ("FP16",), "int8": ("INT8", "FP16")}[cfg.precision]
    constraint = (
        "OBEY_PRECISION_CONSTRAINTS" if cfg.obey_precision else "PREFER_PRECISION_CONSTRAINTS"
    )
    keep_flags = (constraint,) if cfg.keep_fp32 else ()
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
        typed = cfg.route == "typed" or (cfg.route == "auto" and features.strongly_typed)
        if typed and not features.strongly_typed:
            raise InputError(
                f"TensorRT {features.version} has no strongly typed networks; use route 'flags'"
            )
        if not typed and not features.precision_flags:
            raise InputError(
                f"TensorRT {features.version} has no precision builder flags; use route 'typed'"
            )
        if typed:
            return PrecisionPlan(graph.name, cfg.precision, variant, typed=True)
        # Explicit quantization on the flags route: the Q/DQ scales replace calibration.
        return PrecisionPlan(
            graph.name, cfg.precision, variant, False, low + keep_flags, cfg.keep_fp32
        )

    if cfg.route == "typed" or not features.precision_flags:
        why = (
            f"TensorRT {features.version} builds strongly typed networks only (no FP16/INT8 "
            "builder flags, no calibrators)"
            if not features.precision_flags
            else "the typed route needs a graph that carries its precision"
        )
        raise InputError(
            f"{why}: {cfg.precision} needs {variant.name} ("
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


# --- which layers stay FP32 (names come from the ONNX node names, i.e. torch module paths)

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


# --- legacy INT8 calibration (TensorRT 8.6 / 10.x only)


def expected_feed_shapes(graph: GraphContract) -> dict[str, tuple[int, ...]]:
    """Input shapes calibration feeds must have: the profile's opt shape for dynamic
    inputs (TensorRT calibrates at the calibration profile's opt), else the fixed shape."""
    return {
        spec.name: graph.profile_shapes(spec.name)[1] if spec.dynamic_axes else spec.concrete()
        for spec in graph.inputs
    }


def fit_rows(arr: NDArray[np.float32], shape: tuple[int, ...]) -> NDArray[np.float32]:
    """``arr`` with its first axis cycled or cut to ``shape[0]`` when only that differs
    (N boxes -> the profile's opt boxes); anything else is returned unchanged."""
    if arr.ndim == len(shape) and arr.shape[1:] == shape[1:] and len(arr) >= 1:
        arr = np.resize(arr, shape)
    return np.ascontiguousarray(arr)


class FeedStager:
    """Copies calibration feeds to device buffers allocated once (on the first feed) and
    returns their pointers in the order TensorRT asks for: the calibrator's logic,
    kept free of TensorRT so it can be tested with any :class:`CudaStream`."""

    def __init__(
        self, graph: GraphContract, feeds: Iterable[Feeds] | None, cuda: CudaStream
    ) -> None:
        self.graph = graph
        self.shapes = expected_feed_shapes(graph)
        self._feeds: Iterator[Feeds] = iter(feeds if feeds is not None else ())
        self._cuda = cuda
        self._buffers: dict[str, DeviceArray] = {}
        self.batches = 0
        self.error: Exception | None = None

    def next_pointers(self, names: Sequence[str]) -> list[int]:
        """Device pointers of the next feed, ``[]`` when the feeds are exhausted (or on an
        error, kept in :attr:`error`: exceptions must not cross into TensorRT)."""
        try:
            feed = next(self._feeds, None)
            if feed is None:
                return []
            pointers = []
            for name in names:
                if name not in feed:
                    raise InputError(f"calibration feed for {self.graph.name} lacks {name!r}")
                arr = fit_rows(np.asarray(feed[name], dtype=np.float32), self.shapes[name])
                if arr.shape != self.shapes[name]:
                    raise InputError(
                        f"calibration feed {name!r} has shape {arr.shape}, the "
                        f"{self.graph.name} profile calibrates at {self.shapes[name]}"
                    )
                if name not in self._buffers:
                    self._buffers[name] = self._cuda.empty(arr.nbytes)
                self._cuda.htod(self._buffers[name], arr)
                pointers.append(self._buffers[name].ptr)
            self._cuda.synchronize()
            self.batches += 1
            return pointers
        except Exception as exc:
            self.error = exc
            return []


def make_entropy_calibrator(stager: FeedStager, cache_file: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``stager`` that reads/writes ``cache_file``."""
    base: Any = load_tensorrt().IInt8EntropyCalibrator2  # TensorRT <= 10 only

    class EntropyCalibrator(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.stager = stager

        def get_batch_size(self) -> int:
            return 1  # explicit batch: the batch is part of each feed's shape

        def get_batch(self, names: list[str]) -> list[int]:
            return self.stager.next_pointers(names)

        # None means "no cache: calibrate" (TensorRT's documented contract).
        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_file, bytes(cache))

    return EntropyCalibrator()


# --- the builder


class EngineBuilder:
    """Parse one exported graph and build a serialized engine; one concern per method."""

    def __init__(self, cfg: BuildConfig, trt_module: ModuleType, cuda: CudaStream) -> None:
        self.cfg = cfg
        self.trt = trt_module
        self.cuda = cuda
        self.features = TrtFeatures.detect(trt_module)
        self.logger = trt_module.Logger(trt_module.Logger.WARNING)
        self.builder: Any = trt_module.Builder(self.logger)

    def create_network(self, plan: PrecisionPlan) -> TrtNetwork:
        net = self.trt.NetworkDefinitionCreationFlag
        flags = 0
        if plan.typed and self.features.strongly_typed:
            flags |= 1 << int(net.STRONGLY_TYPED)
        elif self.features.explicit_batch_flag:
            # Required on 8.x; deprecated and ignored on 10.x.
            flags |= 1 << int(net.EXPLICIT_BATCH)
        return self.builder.create_network(flags)

    def parse_onnx(self, network: TrtNetwork, path: Path) -> TrtParser:
        """Parse ``path`` (external weights next to it are found). The parser owns the
        weights: keep it alive until the engine is built."""
        parser = self.trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineBuildError(
                f"TensorRT {self.features.version} cannot parse {path}: " + " | ".join(errors)
            )
        return parser

    def check_io(self, network: TrtNetwork, graph: GraphContract) -> None:
        inputs = {network.get_input(i).name for i in range(network.num_inputs)}
        outputs = {network.get_output(i).name for i in range(network.num_outputs)}
        if inputs != set(graph.input_names) or outputs != set(graph.output_names):
            raise EngineBuildError(
                f"{graph.file}: inputs {sorted(inputs)} / outputs {sorted(outputs)} do not "
                f"match the contract's {graph.input_names} / {graph.output_names}"
            )

    def create_config(self) -> TrtConfig:
        config = self.builder.create_builder_config()
        if self.cfg.workspace_mib is not None:
            config.set_memory_pool_limit(
                self.trt.MemoryPoolType.WORKSPACE, self.cfg.workspace_mib << 20
            )
        if self.cfg.max_aux_streams is not None and hasattr(config, "max_aux_streams"):
            config.max_aux_streams = self.cfg.max_aux_streams
        return config

    def add_profile(self, config: TrtConfig, graph: GraphContract) -> TrtProfile | None:
        """One optimisation profile from the contract for the dynamic inputs (None when
        the graph is static, like the encoder)."""
        dynamic = [spec.name for spec in graph.inputs if spec.dynamic_axes]
        if not dynamic:
            return None
        profile = self.builder.create_optimization_profile()
        for name in dynamic:
            lo, opt, hi = graph.profile_shapes(name)
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        return profile

    def load_timing_cache(self, config: TrtConfig) -> None:
        path = self.cfg.timing_cache
        data = path.read_bytes() if path is not None and path.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)

    def save_timing_cache(self, config: TrtConfig) -> None:
        if self.cfg.timing_cache is not None:
            atomic_write_bytes(self.cfg.timing_cache, bytes(config.get_timing_cache().serialize()))

    def pin_fp32(self, network: TrtNetwork, keep: Sequence[str]) -> int:
        """Pin the selected layers (and their float outputs) to FP32; returns how many."""
        trt_ = self.trt
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        infos = [LayerInfo(i, layer.name, layer.type.name) for i, layer in enumerate(layers)]
        chosen = select_fp32_layers(infos, keep)
        for index in chosen:
            layer = layers[index]
            layer.precision = trt_.float32
            for o in range(layer.num_outputs):
                if layer.get_output(o).dtype in (trt_.float32, trt_.float16):
                    layer.set_output_type(o, trt_.float32)
        return len(chosen)

    def set_precision(
        self,
        network: TrtNetwork,
        config: TrtConfig,
        plan: PrecisionPlan,
        graph: GraphContract,
        profile: TrtProfile | None,
    ) -> FeedStager | None:
        """Flags, FP32 pins and calibrator of a flags-route plan (nothing when typed)."""
        for flag in plan.flags:
            config.set_flag(getattr(self.trt.BuilderFlag, flag))
        if plan.keep_fp32:
            self.pin_fp32(network, plan.keep_fp32)
        if not plan.calibrate:
            return None
        stager = FeedStager(graph, self.cfg.feeds_for(graph.name), self.cuda)
        config.int8_calibrator = make_entropy_calibrator(
            stager, self.cfg.calib_cache_file(graph.name)
        )
        if profile is not None:
            config.set_calibration_profile(profile)
        return stager

    def build(self, graph: GraphContract, plan: PrecisionPlan) -> bytes:
        """Serialized engine of ``graph`` following ``plan``."""
        network = self.create_network(plan)
        parser = self.parse_onnx(network, plan.onnx)
        self.check_io(network, graph)
        config = self.create_config()
        profile = self.add_profile(config, graph)
        self.load_timing_cache(config)
        stager = self.set_precision(network, config, plan, graph, profile)
        serialized = self.builder.build_serialized_network(network, config)
        del parser
        if stager is not None and stager.error is not None:
            raise EngineBuildError(f"INT8 calibration of {graph.name} failed: {stager.error}")
        if serialized is None:
            raise EngineBuildError(
                f"TensorRT {self.features.version} could not build {plan.describe()} "
                "(see the TensorRT log above)"
            )
        cache = self.cfg.calib_cache_file(graph.name)
        if stager is not None and stager.batches == 0 and not cache.is_file():
            raise EngineBuildError(
                f"INT8 calibration of {graph.name} received no feeds (a generator is consumed "
                "by the first graph: pass a list or a re-iterable batcher)"
            )
        self.save_timing_cache(config)
        return bytes(serialized)


# --- cache-aware entry point


@dataclass(frozen=True)
class BuiltEngine:
    """One engine of :func:`build_engines`: where it is, whether it was (re)built, why."""

    graph: str
    path: Path
    built: bool
    reason: str
    plan: PrecisionPlan


def engine_name(graph: str, precision: str) -> str:
    """Cache name of an engine: ``"encoder.fp16"`` -> ``encoder.fp16.engine``."""
    return f"{graph}.{precision}"


def platform_facts(trt_module: ModuleType, cuda: CudaStream) -> PlatformFacts:
    major, minor = cuda.compute_capability()
    return PlatformFacts(str(trt_module.__version__), cuda.device_name(), f"{major}.{minor}")


def engine_key(
    graph: GraphContract, plan: PrecisionPlan, cfg: BuildConfig, facts: PlatformFacts
) -> EngineKey:
    """The cache key of ``graph`` built by ``plan`` on ``facts``."""
    calib = cfg.calib_cache_file(graph.name)
    options = {
        **plan.options(),
        "workspace_mib": cfg.workspace_mib,
        "max_aux_streams": cfg.max_aux_streams,
        "obey_precision": cfg.obey_precision,
        "calib_cache_sha256": file_sha256(calib) if plan.calibrate and calib.is_file() else None,
    }
    profile = {
        spec.name: graph.profile_shapes(spec.name) for spec in graph.inputs if spec.dynamic_axes
    }
    return EngineKey(file_sha256(plan.onnx), facts, plan.precision, profile, options)


def build_engines(
    cfg: BuildConfig, *, trt_module: ModuleType | None = None, cuda: CudaStream | None = None
) -> list[BuiltEngine]:
    """Build (or reuse from the engine cache) the engines ``cfg`` selects.

    Raises :class:`MissingDependencyError` without TensorRT, :class:`NoGpuError` without a
    GPU, :class:`InputError` when no precision route exists, :class:`EngineBuildError`
    when TensorRT fails.
    """
    from edge_sameo.backends.cuda_memory import open_cuda_stream

    trt_module = trt_module or load_tensorrt()
    cuda = cuda or open_cuda_stream()
    contract = ExportContract.read(cfg.onnx_dir)
    features = TrtFeatures.detect(trt_module)
    facts = platform_facts(trt_module, cuda)
    cache = EngineCache(cfg.engine_dir)
    builders: list[EngineBuilder] = []  # created on the first cache miss only

    def build(graph: GraphContract, plan: PrecisionPlan) -> bytes:
        if not builders:
            builders.append(EngineBuilder(cfg, trt_module, cuda))
        return builders[0].build(graph, plan)

    results = []
    for graph in cfg.selected(contract):
        has_calibration = (
            cfg.feeds_for(graph.name) is not None or cfg.calib_cache_file(graph.name).is_file()
        )
        plan = plan_precision(graph, cfg, features, calibration=has_calibration)
        key = engine_key(graph, plan, cfg, facts)
        result = cache.get_or_build(
            engine_name(graph.name, cfg.precision),
            key,
            partial(build, graph, plan),
            force=cfg.rebuild,
            rekey=partial(engine_key, graph, plan, cfg, facts),
        )
        results.append(BuiltEngine(graph.name, result.path, result.built, result.reason, plan))
    return results

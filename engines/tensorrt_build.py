"""Build TensorRT engines from the exported ONNX graphs (NVIDIA samples' ``EngineBuilder``),
reusing the engine cache (:class:`~edge_sameo.backends.engine_cache.EngineCache`) when the
graph, TensorRT, GPU and options are unchanged.

The stages live one per module: :mod:`.precision_plan` picks each graph's ONNX file, network
kind and builder flags; :mod:`.fp32_layers` picks the layers kept in FP32;
:mod:`.calibrator` is the legacy INT8 calibrator; this module parses, configures, builds
and caches. :func:`build_for_runtime` is what the CLI hands the TensorRT runtime as its
``build``.

``tensorrt`` is imported only inside functions; importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_sameo.backends.cuda_memory import CudaStream
from edge_sameo.backends.engine_cache import (
    EngineCache,
    EngineKey,
    PlatformFacts,
    engine_name,
    file_sha256,
    platform_facts,
)
from edge_sameo.contract import ExportContract, GraphContract
from edge_sameo.engines.calibrator import Feeds, FeedStager, make_entropy_calibrator
from edge_sameo.engines.fp32_layers import (
    DEFAULT_KEEP_FP32,
    KEEP_FP32_CHOICES,
    LayerInfo,
    select_fp32_layers,
)
from edge_sameo.engines.precision_plan import PrecisionPlan, TrtFeatures, plan_precision
from edge_sameo.errors import EdgeSameoError, InputError
from edge_sameo.io import atomic_write_bytes
from edge_sameo.precision import ENGINE_PRECISIONS, check_precision

# TensorRT objects are typed Any: tensorrt-stubs 10.13 cannot be read by mypy (its
# tensorrt/ has no py.typed, and its .pyi has syntax errors: parameters named ``in``).
TrtNetwork = Any  # tensorrt.INetworkDefinition
TrtConfig = Any  # tensorrt.IBuilderConfig
TrtParser = Any  # tensorrt.OnnxParser
TrtProfile = Any  # tensorrt.IOptimizationProfile

#: What ``BuildConfig.graphs`` selects: every graph of the export, one of them, or
#: ``both`` (encoder and decoder: the meaning it had before exports could carry a refiner).
GRAPHS = ("all", "both", "encoder", "decoder", "refiner")
_SELECTED = {"all": ("encoder", "decoder", "refiner"), "both": ("encoder", "decoder")}


class EngineBuildError(EdgeSameoError):
    """TensorRT could not parse or build a graph (the message lists the parser errors)."""


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
    rebuild: bool = False

    def __post_init__(self) -> None:
        for name in ("onnx_dir", "out_dir", "timing_cache", "calib_cache"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "keep_fp32", tuple(self.keep_fp32))
        check_precision(self.precision, ENGINE_PRECISIONS, "--precision")
        if self.graphs not in GRAPHS:
            raise InputError(f"graphs must be one of {', '.join(GRAPHS)}, not {self.graphs!r}")
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
        """Where the engines go: ``out_dir``, else ``onnx_dir``."""
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
        """The calibration feeds for ``graph`` (None: no calibration data)."""
        feeds = self.calibration_feeds
        if isinstance(feeds, Mapping):
            return feeds.get(graph)
        return feeds

    def calib_cache_file(self, graph: str) -> Path:
        """``<calib_cache or engine_dir>/<graph>.int8.calib``."""
        return (self.calib_cache or self.engine_dir) / f"{graph}.int8.calib"


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
        """An empty network: strongly typed for a typed plan when this TensorRT has it,
        else explicit-batch where the flag exists (8.x)."""
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
        """Raise :class:`EngineBuildError` when the parsed network's input/output names
        differ from ``graph``'s contract."""
        inputs = {network.get_input(i).name for i in range(network.num_inputs)}
        outputs = {network.get_output(i).name for i in range(network.num_outputs)}
        if inputs != set(graph.input_names) or outputs != set(graph.output_names):
            raise EngineBuildError(
                f"{graph.file}: inputs {sorted(inputs)} / outputs {sorted(outputs)} do not "
                f"match the contract's {graph.input_names} / {graph.output_names}"
            )

    def create_config(self) -> TrtConfig:
        """A builder config with the ``--workspace`` limit and ``--max-aux-streams`` set."""
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
        """Attach the timing cache of ``cfg.timing_cache`` to ``config`` (an empty one
        when the file does not exist yet)."""
        path = self.cfg.timing_cache
        data = path.read_bytes() if path is not None and path.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)

    def save_timing_cache(self, config: TrtConfig) -> None:
        """Write ``config``'s timing cache to ``cfg.timing_cache`` (when set), atomically."""
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
            self.trt, stager, self.cfg.calib_cache_file(graph.name)
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


def engine_key(
    graph: GraphContract, plan: PrecisionPlan, cfg: BuildConfig, facts: PlatformFacts
) -> EngineKey:
    """The cache key of ``graph`` built by ``plan`` on ``facts``."""
    calib = cfg.calib_cache_file(graph.name)
    options = {
        **plan.options(),
        "workspace_mib": cfg.workspace_mib,
        "max_aux_streams": cfg.max_aux_streams,
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
    from edge_sameo.backends.tensorrt_loader import load_tensorrt

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


def build_for_runtime(
    export_dir: Path,
    precision: str,
    *,
    engine_dir: Path | None = None,
    trt_module: ModuleType | None = None,
    cuda: CudaStream | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Every engine of the export in ``export_dir`` at ``precision``, built or reused from
    the engine cache in ``engine_dir`` (default: the export folder): graph name -> engine
    file. The ``build`` the CLI hands the TensorRT runtime
    (:class:`~edge_sameo.backends.tensorrt_backend.EngineBuild`); ``options`` are
    :class:`BuildConfig` fields."""
    cfg = BuildConfig(
        onnx_dir=export_dir, precision=precision, out_dir=engine_dir, graphs="all", **options
    )
    return {e.graph: e.path for e in build_engines(cfg, trt_module=trt_module, cuda=cuda)}

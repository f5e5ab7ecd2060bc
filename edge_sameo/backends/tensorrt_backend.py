"""TensorRT runtime: an encoder engine, a decoder engine (and a refiner engine when the
export has a refiner) of an export, loaded from the engine cache.

The runtime builds nothing itself: it loads the engines ``edge-sameo build`` left in the
engine cache (:class:`~edge_sameo.backends.engine_cache.EngineCache`), or, given a
``build`` callable (the CLI passes ``edge_sameo.engines.tensorrt_build.build_for_runtime``),
has them built or reused on demand. Each engine is wrapped by :class:`TensorRTInfer`
(NVIDIA samples' pattern):
I/O bound by tensor *name* from the contract, device buffers allocated once (the decoder
and the refiner at their profiles' max boxes, so :attr:`max_boxes` makes the base class
chunk), the box axis set with ``set_input_shape`` per call, ``execute_async_v3`` on one
stream. The static encoder is captured into a CUDA graph and replayed (falls back to
plain enqueue when capture fails). The embedding stays on the GPU between ``encode`` and
``decode``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend, DecoderOutput
from edge_sameo.backends.cuda_memory import CudaStream, DeviceArray
from edge_sameo.backends.engine_cache import EngineCache, engine_name, platform_facts
from edge_sameo.contract import (
    BOXES,
    CROPS,
    IMAGE_EMBEDDINGS,
    PIXELS,
    REFINED_LOGITS,
    ExportContract,
    GraphContract,
    precision_onnx_path,
)
from edge_sameo.errors import EdgeSameoError, InputError
from edge_sameo.precision import RUNTIME_PRECISIONS


class EngineLoadError(EdgeSameoError):
    """A serialized engine could not be deserialized or does not match the contract."""


class EngineBuild(Protocol):
    """Builds (or reuses from the engine cache in ``engine_dir``) every engine of the export
    in ``export_dir`` at ``precision``; returns graph name -> serialized engine file.
    ``options`` are the builder's own (``edge_sameo.engines.tensorrt_build.BuildConfig``
    fields); ``trt_module`` and ``cuda`` are the runtime's, shared with the build."""

    def __call__(
        self,
        export_dir: Path,
        precision: str,
        *,
        engine_dir: Path,
        trt_module: ModuleType,
        cuda: CudaStream,
        **options: Any,
    ) -> Mapping[str, Path]: ...


class TensorRTInfer:
    """One engine: bindings by tensor name, buffers allocated once, one stream.

    Inputs/outputs are those of ``graph`` (the contract); their dtypes are the engine's
    (float32 I/O for our graphs, whatever the internal precision).
    """

    def __init__(
        self,
        trt_module: ModuleType,
        engine: Any,  # tensorrt.ICudaEngine (the stubs are unreadable by mypy)
        graph: GraphContract,
        cuda: CudaStream,
    ) -> None:
        self.graph = graph
        self.engine = engine
        self.cuda = cuda
        self.context: Any = engine.create_execution_context()
        self._check_io(trt_module)
        self.dtypes = {
            n: np.dtype(trt_module.nptype(engine.get_tensor_dtype(n)))
            for n in graph.input_names + graph.output_names
        }
        self.limits: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for spec in graph.inputs:
            if spec.dynamic_axes:
                lo, _, hi = engine.get_tensor_profile_shape(spec.name, 0)
                self.limits[spec.name] = (tuple(lo), tuple(hi))
                self.context.set_input_shape(spec.name, tuple(hi))
        shapes = {
            n: tuple(self.context.get_tensor_shape(n))
            for n in graph.input_names + graph.output_names
        }
        self.buffers: dict[str, DeviceArray] = {}
        self.host: dict[str, NDArray[Any]] = {}
        for name, shape in shapes.items():
            self.buffers[name] = cuda.empty(math.prod(shape) * self.dtypes[name].itemsize)
            self.context.set_tensor_address(name, self.buffers[name].ptr)
        for name in graph.output_names:
            self.host[name] = cuda.pinned(shapes[name], self.dtypes[name])
        self._shapes: dict[str, tuple[int, ...]] = {n: shapes[n] for n in graph.input_names}
        self._replay: Any = None

    def _check_io(self, trt_module: ModuleType) -> None:
        mode = trt_module.TensorIOMode
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        want = set(self.graph.input_names) | set(self.graph.output_names)
        wrong = [n for n in self.graph.input_names if self.engine.get_tensor_mode(n) != mode.INPUT]
        wrong += [
            n for n in self.graph.output_names if self.engine.get_tensor_mode(n) != mode.OUTPUT
        ]
        if names != want or wrong:
            raise EngineLoadError(
                f"{self.graph.name} engine I/O {sorted(names)} does not match the contract "
                f"(inputs {self.graph.input_names}, outputs {self.graph.output_names})"
            )

    @property
    def max_rows(self) -> int | None:
        """Largest size of the dynamic axis (the box profile's max)."""
        if not self.limits:
            return None
        return min(hi[0] for _, hi in self.limits.values())

    def _shape_ok(self, name: str, shape: tuple[int, ...]) -> bool:
        if name in self.limits:
            lo, hi = self.limits[name]
            if len(shape) != len(hi):
                return False
            return all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))
        return shape == self._shapes[name]

    def set_input(self, name: str, value: NDArray[Any]) -> None:
        """Copy one input to its device buffer (and set its shape when dynamic)."""
        arr = np.ascontiguousarray(value, dtype=self.dtypes[name])
        if not self._shape_ok(name, arr.shape):
            want = self.limits.get(name, (self._shapes[name],) * 2)
            raise InputError(
                f"{self.graph.name} input {name!r}: shape {arr.shape}, engine takes "
                + (f"{want[0]}" if want[0] == want[1] else f"{want[0]} .. {want[1]}")
            )
        self.link(name, self.buffers[name])
        if name in self.limits and arr.shape != self._shapes[name]:
            if not self.context.set_input_shape(name, arr.shape):
                raise EngineLoadError(f"TensorRT refused shape {arr.shape} for {name!r}")
            self._shapes[name] = arr.shape
        self.cuda.htod(self.buffers[name], arr)

    def link(self, name: str, buffer: DeviceArray) -> None:
        """Read input ``name`` from ``buffer`` (another engine's output) without a copy."""
        self.context.set_tensor_address(name, buffer.ptr)

    def enqueue(self) -> None:
        """Queue one execution on the stream (the captured CUDA graph when there is one);
        inputs must be set, outputs are read with :meth:`fetch`."""
        if self._replay is not None:
            self._replay()
        elif not self.context.execute_async_v3(self.cuda.handle):
            raise EdgeSameoError(f"TensorRT execution of the {self.graph.name} engine failed")

    def fetch(self, names: list[str] | None = None) -> dict[str, NDArray[np.float32]]:
        """Copy outputs back (only the rows in use), wait, return float32 copies."""
        names = names if names is not None else self.graph.output_names
        shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in names}
        for n in names:
            nbytes = math.prod(shapes[n]) * self.dtypes[n].itemsize
            self.cuda.dtoh(self.host[n], self.buffers[n], nbytes)
        self.cuda.synchronize()
        out = {}
        for n in names:
            flat = self.host[n].reshape(-1)[: math.prod(shapes[n])]
            out[n] = flat.reshape(shapes[n]).astype(np.float32, copy=True)
        return out

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[np.float32]]:
        """Set every input of ``feeds`` (name -> array), execute, return every output as a
        float32 copy (name -> array in the engine's current shape)."""
        for name in self.graph.input_names:
            self.set_input(name, feeds[name])
        self.enqueue()
        return self.fetch()

    def capture_graph(self) -> str | None:
        """Capture the (static-shape) enqueue into a CUDA graph; the reason when not."""
        if self.limits:
            return "dynamic shapes"
        try:
            # One enqueue first: TensorRT does lazy initialisation that must not be captured.
            self.enqueue()
            self.cuda.synchronize()

            def launch() -> None:
                if not self.context.execute_async_v3(self.cuda.handle):
                    raise EdgeSameoError("enqueue failed during CUDA graph capture")

            self._replay = self.cuda.capture(launch)
        except Exception as exc:  # capture is an optimisation: any failure -> plain enqueue
            self._replay = None
            return f"{type(exc).__name__}: {exc}"
        return None


class TensorRTBackend(Backend):
    """TensorRT engines of an export folder (``encoder.onnx`` + ``decoder.onnx`` (+
    ``refiner.onnx``) + ``contract.json``; ``<graph>.fp16.onnx``/``.int8.onnx`` where
    ``calib`` wrote them).

    ``export_dir``: the export folder; ``engine_dir``: the engine cache (default: the export
    folder); ``cuda_graph``: replay the encoder from a CUDA graph. Without ``build`` the
    engines must be in the cache, built by this TensorRT on this GPU from the graphs now in
    ``export_dir`` (else :class:`InputError` saying how to build them); with ``build`` they
    are built or reused on demand, and ``build_options`` go to it.
    """

    name = "tensorrt"
    precisions: ClassVar[tuple[str, ...]] = RUNTIME_PRECISIONS["tensorrt"]

    def __init__(
        self,
        export_dir: str | Path,
        precision: str = "fp16",
        *,
        engine_dir: str | Path | None = None,
        cuda_graph: bool = True,
        build: EngineBuild | None = None,
        **build_options: Any,
    ) -> None:
        from edge_sameo.backends.cuda_memory import open_cuda_stream
        from edge_sameo.backends.tensorrt_loader import load_tensorrt

        if build is None and build_options:
            raise TypeError(f"builder options {sorted(build_options)} need a build callable")
        self.check_precision(precision)  # a wrong precision is reported before TensorRT
        export_dir = Path(export_dir)
        engine_dir = Path(engine_dir) if engine_dir is not None else export_dir
        trt_module = load_tensorrt()
        self._cuda = open_cuda_stream()
        contract = ExportContract.read(export_dir)
        super().__init__(contract, precision)
        if build is not None:
            engines = dict(
                build(
                    export_dir,
                    precision,
                    engine_dir=engine_dir,
                    trt_module=trt_module,
                    cuda=self._cuda,
                    **build_options,
                )
            )
        else:
            engines = self._cached_engines(export_dir, engine_dir, trt_module)
        self._load(engines, engine_dir, trt_module, cuda_graph)

    def _cached_engines(
        self, export_dir: Path, engine_dir: Path, trt_module: ModuleType
    ) -> dict[str, Path]:
        """Graph name -> engine file of every graph, from the cache without building."""
        cache = EngineCache(engine_dir)
        facts = platform_facts(trt_module, self._cuda)
        engines = {}
        for graph in self.contract.graphs:
            # The builder takes <graph>.<precision>.onnx (from calibrate) where it exists.
            variant = precision_onnx_path(export_dir, graph.file, self.precision)
            source = variant.name if variant.is_file() else graph.file
            found = cache.find(engine_name(graph.name, self.precision), facts, export_dir, source)
            if not found.hit:
                out = "" if engine_dir == export_dir else f" --out {engine_dir}"
                raise InputError(
                    f"no loadable {self.precision} engine of the {graph.name} graph in "
                    f"{engine_dir} ({found.reason}); build it: edge-sameo build --onnx "
                    f"{export_dir} --precision {self.precision}{out}"
                )
            engines[graph.name] = found.path
        return engines

    def _load(
        self,
        engines: Mapping[str, Path],
        engine_dir: Path,
        trt_module: ModuleType,
        cuda_graph: bool,
    ) -> None:
        contract = self.contract
        self.engines = {g.name: engines[g.name] for g in contract.graphs}
        self.trt_version = str(trt_module.__version__)
        self._logger = trt_module.Logger(trt_module.Logger.WARNING)
        self._runtime = trt_module.Runtime(self._logger)
        cache = EngineCache(engine_dir)
        infers = {}
        for graph in contract.graphs:
            engine = self._runtime.deserialize_cuda_engine(self.engines[graph.name].read_bytes())
            if engine is None:
                # A matching sidecar but an engine this TensorRT rejects: forget it, so the
                # next start rebuilds instead of failing again.
                cache.invalidate(engine_name(graph.name, self.precision))
                raise EngineLoadError(
                    f"TensorRT {self.trt_version} cannot load {self.engines[graph.name]}; "
                    "it was dropped from the engine cache, build it again"
                )
            infers[graph.name] = TensorRTInfer(trt_module, engine, graph, self._cuda)
        self._encoder, self._decoder = infers["encoder"], infers["decoder"]
        self._refiner = infers.get("refiner")
        rows = [i.max_rows for i in infers.values() if i.max_rows is not None]
        self.max_boxes = min(rows) if rows else None
        self.cuda_graph: str = "off"
        if cuda_graph:
            failure = self._encoder.capture_graph()
            self.cuda_graph = "on" if failure is None else f"off ({failure})"
        self._shared = (
            self._encoder.dtypes[IMAGE_EMBEDDINGS] == self._decoder.dtypes[IMAGE_EMBEDDINGS]
        )
        self._last_embedding: NDArray[np.float32] | None = None

    def describe(self) -> str:
        """``"tensorrt <precision> (TensorRT <version>, <GPU name>, CUDA graph on|off)"``."""
        return (
            f"tensorrt {self.precision} (TensorRT {self.trt_version}, "
            f"{self._cuda.device_name()}, CUDA graph {self.cuda_graph})"
        )

    def encode(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """The returned embedding is read-only: decoding *that* array reuses the copy
        still on the GPU (identity check), which is only safe if nobody mutates it."""
        emb = self._encoder.run({PIXELS: pixels})[IMAGE_EMBEDDINGS]
        emb.flags.writeable = False
        self._last_embedding = emb
        return emb

    def _decode(self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]) -> DecoderOutput:
        dec = self._decoder
        if self._shared and embedding is self._last_embedding:
            dec.link(IMAGE_EMBEDDINGS, self._encoder.buffers[IMAGE_EMBEDDINGS])
        else:
            dec.set_input(IMAGE_EMBEDDINGS, embedding)
        dec.set_input(BOXES, boxes)
        dec.enqueue()
        out = dec.fetch()
        return DecoderOutput(*(out[n] for n in self.contract.decoder.output_names))

    def _refine(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self._refiner is not None  # refine() checks the contract first
        return self._refiner.run({CROPS: crops})[REFINED_LOGITS]

    def close(self) -> None:
        """Drop the engines and contexts, then synchronize and close the CUDA stream."""
        for name in ("_encoder", "_decoder", "_refiner", "_runtime"):
            if hasattr(self, name):
                delattr(self, name)
        if hasattr(self, "_cuda"):
            self._cuda.synchronize()
            self._cuda.close()

"""The legacy INT8 entropy calibrator (TensorRT 8.6 / 10.x only; TensorRT 11 removed
calibrators: INT8 there comes from the Q/DQ graphs ``edge-sameo calibrate`` writes).

:class:`FeedStager` holds the calibrator's logic (feeds fitted to the profile's opt shape,
copied to device buffers allocated once) free of TensorRT, so it is tested with any
:class:`~edge_sameo.backends.cuda_memory.CudaStream`; :func:`make_entropy_calibrator` wraps
it in TensorRT's ``IInt8EntropyCalibrator2``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.cuda_memory import CudaStream, DeviceArray
from edge_sameo.contract import GraphContract
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_bytes

#: One calibration feed: input name -> array of the shape the engine's profile takes.
Feeds = Mapping[str, NDArray[Any]]


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


def make_entropy_calibrator(trt_module: ModuleType, stager: FeedStager, cache_file: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` of ``trt_module`` over ``stager`` that reads/writes
    ``cache_file``."""
    base: Any = trt_module.IInt8EntropyCalibrator2  # TensorRT <= 10 only

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

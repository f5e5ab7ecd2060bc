"""CUDA memory, one stream and CUDA graphs for TensorRT (inference and INT8 calibration).

torch's CUDA allocator is used when ``torch.cuda`` is available (it is a dependency
anyway, and sharing its primary context avoids a second CUDA context next to a torch
pipeline); otherwise pycuda (the ``trt`` extra). Neither is imported before
:func:`open_cuda_stream` is called.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import EdgeSameoError


class NoGpuError(EdgeSameoError):
    """No CUDA device (or driver) is visible to this process."""


NO_GPU = (
    "no CUDA GPU found: TensorRT needs an NVIDIA GPU and its driver "
    "(on a CPU machine use the onnxruntime or openvino backend)"
)


@dataclass
class DeviceArray:
    """A device allocation of ``nbytes`` at ``ptr``; ``owner`` keeps it alive."""

    ptr: int
    nbytes: int
    owner: Any


class CudaStream(ABC):
    """One CUDA stream on device 0 with the few operations TensorRT I/O needs."""

    kind: str
    #: ``cudaStream_t`` as an int, for ``execute_async_v3``.
    handle: int

    @abstractmethod
    def device_name(self) -> str:
        """The device's marketing name, e.g. ``NVIDIA H100 80GB HBM3``."""

    @abstractmethod
    def compute_capability(self) -> tuple[int, int]:
        """The device's compute capability as ``(major, minor)``."""

    @abstractmethod
    def empty(self, nbytes: int) -> DeviceArray:
        """Uninitialised device memory of ``nbytes`` (at least 1 byte is allocated)."""

    @abstractmethod
    def pinned(self, shape: Sequence[int], dtype: np.dtype[Any]) -> NDArray[Any]:
        """A page-locked host array (fast, truly asynchronous device-to-host copies)."""

    @abstractmethod
    def htod(self, dst: DeviceArray, src: NDArray[Any]) -> None:
        """Queue a copy of the contiguous ``src`` into the start of ``dst``."""

    @abstractmethod
    def dtoh(self, dst: NDArray[Any], src: DeviceArray, nbytes: int) -> None:
        """Queue a copy of ``nbytes`` from ``src`` into the start of the pinned ``dst``."""

    @abstractmethod
    def synchronize(self) -> None:
        """Block until all work queued on this stream has finished."""

    def capture(self, launch: Callable[[], None]) -> Callable[[], None]:
        """Capture ``launch`` (work queued on this stream) into a CUDA graph; return a
        replay function. Raises when this memory provider cannot capture."""
        raise NotImplementedError(f"CUDA graph capture is not implemented for {self.kind}")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the stream's resources."""


def _check_fits(dst: DeviceArray, nbytes: int) -> None:
    if nbytes > dst.nbytes:
        raise ValueError(f"copy of {nbytes} bytes into a {dst.nbytes}-byte device buffer")


class TorchCudaStream(CudaStream):
    """A :class:`CudaStream` on torch's CUDA allocator and primary context."""

    kind = "torch"

    def __init__(self, device: int = 0) -> None:
        import torch

        self._torch = torch
        self._device = torch.device("cuda", device)
        self._stream = torch.cuda.Stream(self._device)
        self.handle = int(self._stream.cuda_stream)
        self._graphs: list[Any] = []

    def device_name(self) -> str:
        """The device's name from ``torch.cuda.get_device_name``."""
        return str(self._torch.cuda.get_device_name(self._device))

    def compute_capability(self) -> tuple[int, int]:
        """The device's compute capability as ``(major, minor)``."""
        major, minor = self._torch.cuda.get_device_capability(self._device)
        return int(major), int(minor)

    def empty(self, nbytes: int) -> DeviceArray:
        """A torch ``uint8`` device tensor of ``max(nbytes, 1)`` bytes, wrapped."""
        t = self._torch.empty(max(nbytes, 1), dtype=self._torch.uint8, device=self._device)
        return DeviceArray(int(t.data_ptr()), nbytes, t)

    def pinned(self, shape: Sequence[int], dtype: np.dtype[Any]) -> NDArray[Any]:
        """A ``shape`` array of ``dtype`` viewing a pinned torch ``uint8`` tensor."""
        nbytes = max(math.prod(shape) * np.dtype(dtype).itemsize, 1)
        t = self._torch.empty(nbytes, dtype=self._torch.uint8, pin_memory=True)
        # The numpy view keeps the pinned tensor alive (it is the view's base).
        flat: NDArray[Any] = t.numpy()
        return flat[: math.prod(shape) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    def htod(self, dst: DeviceArray, src: NDArray[Any]) -> None:
        """Queue a non-blocking copy of ``src`` (made contiguous) into ``dst``."""
        _check_fits(dst, src.nbytes)
        host = self._torch.from_numpy(np.ascontiguousarray(src).reshape(-1).view(np.uint8))
        with self._torch.cuda.stream(self._stream):
            dst.owner[: src.nbytes].copy_(host, non_blocking=True)

    def dtoh(self, dst: NDArray[Any], src: DeviceArray, nbytes: int) -> None:
        """Queue a non-blocking copy of ``nbytes`` from ``src`` into the pinned ``dst``."""
        _check_fits(src, nbytes)
        host = self._torch.from_numpy(dst.reshape(-1).view(np.uint8))
        with self._torch.cuda.stream(self._stream):
            host[:nbytes].copy_(src.owner[:nbytes], non_blocking=True)

    def synchronize(self) -> None:
        """Block until all work queued on this stream has finished."""
        self._stream.synchronize()

    def capture(self, launch: Callable[[], None]) -> Callable[[], None]:
        """Capture ``launch`` into a ``torch.cuda.CUDAGraph`` on this stream (kept alive
        until :meth:`close`); return a function that replays it on this stream."""
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream):
            launch()
        self._graphs.append(graph)

        def replay() -> None:
            with torch.cuda.stream(self._stream):
                graph.replay()

        return replay

    def close(self) -> None:
        """Drop the captured CUDA graphs; torch frees the memory with its tensors."""
        self._graphs.clear()


class PycudaStream(CudaStream):
    """A :class:`CudaStream` on pycuda (``pycuda.autoinit``'s context on device 0)."""

    kind = "pycuda"

    def __init__(self) -> None:
        # pycuda.autoinit creates (and at exit pops) a context on device 0, as in
        # NVIDIA's TensorRT samples; TensorRT then runs in that current context.
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda

        self._cuda = cuda
        self._stream = cuda.Stream()
        self.handle = int(self._stream.handle)
        self._allocations: list[Any] = []

    def device_name(self) -> str:
        """The current context's device name."""
        return str(self._cuda.Context.get_device().name())

    def compute_capability(self) -> tuple[int, int]:
        """The current context's device compute capability as ``(major, minor)``."""
        major, minor = self._cuda.Context.get_device().compute_capability()
        return int(major), int(minor)

    def empty(self, nbytes: int) -> DeviceArray:
        """A ``mem_alloc`` of ``max(nbytes, 1)`` bytes, freed by :meth:`close`."""
        mem = self._cuda.mem_alloc(max(nbytes, 1))
        self._allocations.append(mem)
        return DeviceArray(int(mem), nbytes, mem)

    def pinned(self, shape: Sequence[int], dtype: np.dtype[Any]) -> NDArray[Any]:
        """A page-locked ``shape`` array of ``dtype`` (``pagelocked_empty``)."""
        out: NDArray[Any] = self._cuda.pagelocked_empty(tuple(shape), dtype)
        return out

    def htod(self, dst: DeviceArray, src: NDArray[Any]) -> None:
        """Queue an asynchronous copy of ``src`` (made contiguous) into ``dst``."""
        _check_fits(dst, src.nbytes)
        self._cuda.memcpy_htod_async(dst.owner, np.ascontiguousarray(src), self._stream)

    def dtoh(self, dst: NDArray[Any], src: DeviceArray, nbytes: int) -> None:
        """Queue an asynchronous copy of ``nbytes`` from ``src`` into the pinned ``dst``."""
        _check_fits(src, nbytes)
        view = dst.reshape(-1).view(np.uint8)[:nbytes]
        self._cuda.memcpy_dtoh_async(view, src.owner, self._stream)

    def synchronize(self) -> None:
        """Block until all work queued on this stream has finished."""
        self._stream.synchronize()

    def close(self) -> None:
        """Free every device allocation made by :meth:`empty`."""
        for mem in self._allocations:
            mem.free()
        self._allocations.clear()


def open_cuda_stream() -> CudaStream:
    """A stream on device 0 via torch CUDA, else pycuda; :class:`NoGpuError` when
    neither sees a GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return TorchCudaStream()
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise NoGpuError(NO_GPU) from None
    try:
        cuda.init()
        count = int(cuda.Device.count())
    except Exception as exc:  # pycuda.driver.Error: no driver / no device
        raise NoGpuError(f"{NO_GPU} ({exc})") from None
    if count == 0:
        raise NoGpuError(NO_GPU)
    return PycudaStream()

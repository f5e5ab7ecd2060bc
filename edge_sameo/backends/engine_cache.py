"""Serialized TensorRT engines on disk, reused only when they were built from the same inputs.

An engine is only valid for the ONNX graph, TensorRT version, GPU model (compute
capability) and builder options it was built with; a mismatch either fails to
deserialize or, worse, runs with other numerics. Each ``<name>.engine`` therefore has a
sidecar ``<name>.engine.json`` holding the :class:`EngineKey` it was built from and the
engine's sha256. A lookup reuses the engine only when the sidecar matches exactly;
anything else (no sidecar, a corrupt one, another key, an engine file that changed) is a
miss with a reason, and the caller rebuilds. Nothing here imports TensorRT: the GPU and
TensorRT facts come in as a :class:`PlatformFacts`.

The builder (``edge_sameo.engines.tensorrt_build``) looks engines up by their exact key; the
runtime, which does not know the builder's options, loads one with :meth:`EngineCache.find`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edge_sameo.io import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from edge_sameo.backends.cuda_memory import CudaStream

CACHE_FORMAT = 1
ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
#: The option of an :class:`EngineKey` that names the ONNX file (in the export folder) the
#: engine was built from: ``encoder.onnx``, ``encoder.fp16.onnx``...
ONNX_FILE_OPTION = "onnx_file"


@dataclass(frozen=True)
class PlatformFacts:
    """What an engine is tied to besides its graph: TensorRT version and the GPU."""

    trt_version: str
    gpu_name: str
    #: "major.minor", e.g. "8.7" (Jetson Orin) or "9.0" (H100)
    compute_capability: str


@dataclass(frozen=True)
class EngineKey:
    """Everything that changes the bytes (or numerics) of a built engine.

    ``profile``: input name -> (min, opt, max) shapes of its optimisation profile.
    ``options``: builder options that change the engine (the ONNX file under
    :data:`ONNX_FILE_OPTION`, flags, fp32-kept layers, workspace, aux streams, calibration
    cache digest...), JSON-serialisable values only.
    """

    onnx_sha256: str
    platform: PlatformFacts
    precision: str
    profile: Mapping[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (lists, sorted keys): what the sidecar stores and compares."""
        return json.loads(
            json.dumps(
                {
                    "onnx_sha256": self.onnx_sha256,
                    "trt_version": self.platform.trt_version,
                    "gpu_name": self.platform.gpu_name,
                    "compute_capability": self.platform.compute_capability,
                    "precision": self.precision,
                    "profile": {k: [list(s) for s in v] for k, v in self.profile.items()},
                    "options": dict(self.options),
                },
                sort_keys=True,
            )
        )

    @property
    def digest(self) -> str:
        """SHA-256 hex digest of the key's sorted JSON form."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def engine_name(graph: str, precision: str) -> str:
    """Cache name of an engine: ``("encoder", "fp16")`` -> ``"encoder.fp16"``, stored as
    ``encoder.fp16.engine``."""
    return f"{graph}.{precision}"


def platform_facts(trt_module: ModuleType, cuda: CudaStream) -> PlatformFacts:
    """The installed TensorRT's version and the GPU of ``cuda``."""
    major, minor = cuda.compute_capability()
    return PlatformFacts(str(trt_module.__version__), cuda.device_name(), f"{major}.{minor}")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of the file at ``path``, read ``chunk`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def key_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Human-readable fields that differ, e.g. ``"trt_version '10.0.1' -> '10.3.0'"``."""
    out = []
    for name in sorted(set(stored) | set(wanted)):
        a, b = stored.get(name), wanted.get(name)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                out += [f"{name}.{d}" for d in key_differences(a, b)]
            else:
                out.append(f"{name} {a!r} -> {b!r}")
    return out


@dataclass(frozen=True)
class CacheLookup:
    """Result of :meth:`EngineCache.lookup`: ``hit`` and, on a miss, why."""

    path: Path
    hit: bool
    reason: str


@dataclass(frozen=True)
class CacheResult:
    """Result of :meth:`EngineCache.get_or_build`: the engine path, built or reused, why."""

    path: Path
    built: bool
    reason: str


class EngineCache:
    """``<directory>/<name>.engine`` + ``<name>.engine.json`` pairs (``name``: e.g.
    ``"encoder.fp16"``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def engine_path(self, name: str) -> Path:
        """``<directory>/<name>.engine``."""
        return self.directory / f"{name}{ENGINE_SUFFIX}"

    def sidecar_path(self, name: str) -> Path:
        """``<directory>/<name>.engine.json``: the key the engine was built with."""
        return self.directory / f"{name}{ENGINE_SUFFIX}{SIDECAR_SUFFIX}"

    def read_sidecar(self, name: str) -> dict[str, Any] | None:
        """The sidecar as a dict, or ``None`` when missing or unreadable."""
        try:
            data = json.loads(self.sidecar_path(name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def lookup(self, name: str, key: EngineKey) -> CacheLookup:
        """A hit only when the engine exists and its sidecar records exactly ``key`` and
        the engine's current sha256. Never raises on a bad sidecar: that is a miss."""
        path = self.engine_path(name)
        if not path.is_file():
            return CacheLookup(path, False, "no cached engine")
        if not self.sidecar_path(name).is_file():
            return CacheLookup(path, False, "engine has no sidecar")
        meta = self.read_sidecar(name)
        if meta is None or meta.get("format") != CACHE_FORMAT:
            return CacheLookup(path, False, "sidecar unreadable or of another format")
        stored = meta.get("key")
        if not isinstance(stored, dict):
            return CacheLookup(path, False, "sidecar has no key")
        diffs = key_differences(stored, key.to_dict())
        if diffs:
            return CacheLookup(path, False, "built for other inputs: " + "; ".join(diffs))
        return self._intact(path, meta)

    def find(
        self,
        name: str,
        platform: PlatformFacts,
        onnx_dir: str | Path,
        onnx_file: str | None = None,
    ) -> CacheLookup:
        """The cached engine ``name`` when this machine can load it as it is, whatever builder
        options made it: built by this TensorRT for this GPU, from the ONNX file that is in
        ``onnx_dir`` now (same sha256) — from ``onnx_file`` when given (the file the builder
        would take now, e.g. a calibrated ``encoder.int8.onnx``) — and unchanged since.
        Never raises on a bad sidecar."""
        path = self.engine_path(name)
        if not path.is_file():
            return CacheLookup(path, False, "no cached engine")
        meta = self.read_sidecar(name)
        if meta is None or meta.get("format") != CACHE_FORMAT:
            return CacheLookup(path, False, "no sidecar, or one unreadable or of another format")
        stored = meta.get("key")
        if not isinstance(stored, dict):
            return CacheLookup(path, False, "sidecar has no key")
        here = {
            "trt_version": platform.trt_version,
            "gpu_name": platform.gpu_name,
            "compute_capability": platform.compute_capability,
        }
        diffs = key_differences({k: stored.get(k) for k in here}, here)
        if diffs:
            return CacheLookup(path, False, "built on another platform: " + "; ".join(diffs))
        options = stored.get("options")
        built_from = options.get(ONNX_FILE_OPTION) if isinstance(options, dict) else None
        if not isinstance(built_from, str):
            return CacheLookup(path, False, "sidecar does not name the ONNX file")
        if onnx_file is not None and built_from != onnx_file:
            return CacheLookup(path, False, f"built from {built_from}, not from {onnx_file}")
        onnx = Path(onnx_dir) / built_from
        try:
            if file_sha256(onnx) != stored.get("onnx_sha256"):
                return CacheLookup(path, False, f"{onnx} changed since the engine was built")
        except OSError:
            return CacheLookup(path, False, f"{onnx}, which it was built from, is missing")
        return self._intact(path, meta)

    @staticmethod
    def _intact(path: Path, meta: Mapping[str, Any]) -> CacheLookup:
        """A hit when the engine file still has the size and sha256 its sidecar records."""
        try:
            if path.stat().st_size != meta.get("engine_bytes") or file_sha256(path) != meta.get(
                "engine_sha256"
            ):
                return CacheLookup(path, False, "engine file changed since it was cached")
        except OSError as exc:
            return CacheLookup(path, False, f"engine unreadable ({exc})")
        return CacheLookup(path, True, "cached engine matches")

    def store(
        self, name: str, key: EngineKey, engine: bytes, extra: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the engine, then its sidecar, both atomically. The old sidecar goes first:
        a crash in between leaves an engine without sidecar (a miss), never a stale pair."""
        path = self.engine_path(name)
        self.sidecar_path(name).unlink(missing_ok=True)
        atomic_write_bytes(path, engine)
        atomic_write_json(
            self.sidecar_path(name),
            {
                "format": CACHE_FORMAT,
                "key": key.to_dict(),
                "digest": key.digest,
                "engine_sha256": hashlib.sha256(engine).hexdigest(),
                "engine_bytes": len(engine),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **dict(extra or {}),
            },
        )
        return path

    def invalidate(self, name: str) -> None:
        """Forget an engine (e.g. one that failed to deserialize): the next lookup misses."""
        self.sidecar_path(name).unlink(missing_ok=True)

    def get_or_build(
        self,
        name: str,
        key: EngineKey,
        build: Callable[[], bytes],
        *,
        force: bool = False,
        rekey: Callable[[], EngineKey] | None = None,
    ) -> CacheResult:
        """Reuse the cached engine for ``key`` or ``build()`` and store a new one.

        ``rekey``: the key to store under when building changes it (an INT8 calibration
        writes the calibration cache whose digest is part of the key).
        """
        found = self.lookup(name, key)
        if found.hit and not force:
            return CacheResult(found.path, False, found.reason)
        engine = build()
        path = self.store(name, rekey() if rekey else key, engine)
        return CacheResult(path, True, "rebuild forced" if force else found.reason)

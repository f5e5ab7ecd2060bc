from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_sameo.backends.engine_cache import (
    ONNX_FILE_OPTION,
    EngineCache,
    EngineKey,
    PlatformFacts,
    file_sha256,
    key_differences,
)

ORIN = PlatformFacts("10.3.0", "Orin", "8.7")


def key(**changes: object) -> EngineKey:
    fields: dict[str, object] = {
        "onnx_sha256": "a" * 64,
        "platform": ORIN,
        "precision": "fp16",
        "profile": {"boxes": ((1, 4), (8, 4), (64, 4))},
        "options": {"flags": ["FP16"], "workspace_mib": None},
    }
    fields.update(changes)
    return EngineKey(**fields)  # type: ignore[arg-type]


class Builds:
    """Counts builds; each build returns distinct bytes."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> bytes:
        self.count += 1
        return f"engine #{self.count}".encode()


def test_key_is_json_stable_and_sensitive_to_every_field() -> None:
    base = key()
    assert base.digest == key().digest
    assert json.loads(json.dumps(base.to_dict())) == base.to_dict()
    variants = [
        key(onnx_sha256="b" * 64),
        key(platform=PlatformFacts("10.4.0", "Orin", "8.7")),
        key(platform=PlatformFacts("10.3.0", "NVIDIA H100 80GB HBM3", "9.0")),
        key(platform=PlatformFacts("10.3.0", "Orin", "8.6")),
        key(precision="int8"),
        key(profile={"boxes": ((1, 4), (8, 4), (32, 4))}),
        key(options={"flags": ["FP16"], "workspace_mib": 1024}),
    ]
    digests = {v.digest for v in variants}
    assert base.digest not in digests and len(digests) == len(variants)


def test_build_once_then_reuse(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path / "engines"), Builds()
    first = cache.get_or_build("encoder.fp16", key(), build)
    assert first.built and first.reason == "no cached engine" and build.count == 1
    assert first.path == tmp_path / "engines" / "encoder.fp16.engine"
    assert first.path.read_bytes() == b"engine #1"
    sidecar = json.loads(cache.sidecar_path("encoder.fp16").read_text())
    assert sidecar["key"] == key().to_dict() and sidecar["engine_bytes"] == len(b"engine #1")

    again = cache.get_or_build("encoder.fp16", key(), build)
    assert not again.built and build.count == 1 and again.path == first.path
    forced = cache.get_or_build("encoder.fp16", key(), build, force=True)
    assert forced.built and build.count == 2


def test_mismatch_rebuilds_and_names_the_field(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path), Builds()
    cache.get_or_build("decoder.fp16", key(), build)
    newer = key(platform=PlatformFacts("10.4.0", "Orin", "8.7"))
    found = cache.lookup("decoder.fp16", newer)
    assert not found.hit and "trt_version '10.3.0' -> '10.4.0'" in found.reason
    result = cache.get_or_build("decoder.fp16", newer, build)
    assert result.built and build.count == 2
    assert cache.lookup("decoder.fp16", newer).hit
    assert not cache.lookup("decoder.fp16", key()).hit


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda c: c.sidecar_path("e").write_text("{not json"), "sidecar unreadable"),
        (lambda c: c.sidecar_path("e").write_text("[1, 2]"), "sidecar unreadable"),
        (lambda c: c.sidecar_path("e").write_text('{"format": 1}'), "sidecar has no key"),
        (lambda c: c.sidecar_path("e").unlink(), "engine has no sidecar"),
        (lambda c: c.engine_path("e").write_bytes(b"truncated"), "engine file changed"),
        (lambda c: c.engine_path("e").unlink(), "no cached engine"),
    ],
)
def test_damaged_cache_is_a_miss_then_rebuilt(tmp_path: Path, damage: object, reason: str) -> None:
    cache, build = EngineCache(tmp_path), Builds()
    cache.get_or_build("e", key(), build)
    damage(cache)  # type: ignore[operator]
    found = cache.lookup("e", key())
    assert not found.hit and reason in found.reason
    result = cache.get_or_build("e", key(), build)
    assert result.built and build.count == 2
    assert cache.lookup("e", key()).hit


def test_store_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def failing() -> bytes:
        raise RuntimeError("builder crashed")

    cache.get_or_build("e", key(), Builds())
    with pytest.raises(RuntimeError):
        cache.get_or_build("e", key(), failing, force=True)
    # The previous pair is intact: a failed build never leaves a half-written engine.
    assert cache.lookup("e", key()).hit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.engine", "e.engine.json"]


def test_rekey_stores_under_the_post_build_key(tmp_path: Path) -> None:
    # INT8 calibration writes the calibration cache whose digest is part of the key.
    cache, build = EngineCache(tmp_path), Builds()
    before = key(options={"calib_cache_sha256": None})
    after = key(options={"calib_cache_sha256": "c" * 64})
    cache.get_or_build("e", before, build, rekey=lambda: after)
    assert cache.lookup("e", after).hit and not cache.lookup("e", before).hit


def test_invalidate_forces_a_rebuild(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path), Builds()
    cache.get_or_build("e", key(), build)
    cache.invalidate("e")
    assert cache.get_or_build("e", key(), build).built and build.count == 2


def test_key_differences_recurses_into_options() -> None:
    wanted = key(options={"flags": ["INT8"], "workspace_mib": 512}).to_dict()
    diffs = key_differences(key().to_dict(), wanted)
    assert diffs == ["options.flags ['FP16'] -> ['INT8']", "options.workspace_mib None -> 512"]


# --- the runtime's lookup: loadable here, whatever builder options made it ----------------


def onnx_key(onnx: Path, **changes: object) -> EngineKey:
    """The key of an engine built from ``onnx`` (its sha256 and file name)."""
    options = {ONNX_FILE_OPTION: onnx.name, "flags": ["FP16"], "workspace_mib": 512}
    return key(onnx_sha256=file_sha256(onnx), options=options, **changes)


def test_find_loads_an_engine_built_with_any_options(tmp_path: Path) -> None:
    onnx = tmp_path / "encoder.fp16.onnx"
    onnx.write_bytes(b"graph")
    cache = EngineCache(tmp_path / "engines")
    assert cache.find("encoder.fp16", ORIN, tmp_path).reason == "no cached engine"
    cache.get_or_build("encoder.fp16", onnx_key(onnx), Builds())
    found = cache.find("encoder.fp16", ORIN, tmp_path)
    assert found.hit and found.path == cache.engine_path("encoder.fp16")
    # another GPU or TensorRT: not loadable here
    other = cache.find("encoder.fp16", PlatformFacts("10.3.0", "NVIDIA H100", "9.0"), tmp_path)
    assert not other.hit and "built on another platform" in other.reason
    assert "gpu_name 'Orin' -> 'NVIDIA H100'" in other.reason
    assert "compute_capability '8.7' -> '9.0'" in other.reason


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda onnx, c: onnx.write_bytes(b"graph, exported again"), "changed since the engine"),
        (lambda onnx, c: onnx.unlink(), "which it was built from, is missing"),
        (lambda onnx, c: c.engine_path("e").write_bytes(b"truncated"), "engine file changed"),
        (lambda onnx, c: c.sidecar_path("e").write_text("{not json"), "no sidecar"),
        (lambda onnx, c: c.sidecar_path("e").unlink(), "no sidecar"),
    ],
)
def test_find_refuses_what_no_longer_matches(tmp_path: Path, damage: object, reason: str) -> None:
    onnx = tmp_path / "decoder.onnx"
    onnx.write_bytes(b"graph")
    cache = EngineCache(tmp_path)
    cache.get_or_build("e", onnx_key(onnx), Builds())
    damage(onnx, cache)  # type: ignore[operator]
    found = cache.find("e", ORIN, tmp_path)
    assert not found.hit and reason in found.reason


def test_find_needs_the_onnx_file_in_the_key(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.get_or_build("e", key(), Builds())  # options without ONNX_FILE_OPTION
    found = cache.find("e", ORIN, tmp_path)
    assert not found.hit and found.reason == "sidecar does not name the ONNX file"


def test_find_refuses_an_engine_of_another_graph_file(tmp_path: Path) -> None:
    """After ``edge-sameo calibrate`` wrote ``encoder.int8.onnx``, the builder takes it: an
    engine built earlier from ``encoder.onnx`` is not what a build would give now."""
    plain = tmp_path / "encoder.onnx"
    plain.write_bytes(b"graph")
    cache = EngineCache(tmp_path / "engines")
    cache.get_or_build("encoder.int8", onnx_key(plain), Builds())
    assert cache.find("encoder.int8", ORIN, tmp_path, "encoder.onnx").hit
    found = cache.find("encoder.int8", ORIN, tmp_path, "encoder.int8.onnx")
    assert not found.hit and found.reason == "built from encoder.onnx, not from encoder.int8.onnx"

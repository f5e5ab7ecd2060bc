"""Export a trained model: SAMEO decoder checkpoint, full checkpoint, ONNX, engines.

One call (``edge-sameo train export``) writes into ``out``:

* ``sameo_decoder.pt`` — the SAMEO decoder format ``{"decoder": mask_decoder state,
  "config": model config, "meta": ...}``, which ``load_model(path, base=...)`` applies
  over a base EfficientSAM (the base's decoder becomes the modal head);
* ``model.pt`` — the edge-sameo format (encoder, prompt encoder, both decoders);
* with ``onnx``: ``onnx/`` = ``engines.export.export_onnx`` (encoder.onnx, decoder.onnx,
  contract.json). A fine-tuned decoder over an unchanged encoder gives a byte-identical
  ``encoder.onnx`` (same sha256 in the contract), so the engine cache, keyed by that
  sha256, reuses the encoder engine and only the decoder engine is rebuilt;
* with ``engine``: the TensorRT engines of ``onnx/`` (``engines.tensorrt_build``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edge_sameo.checkpoint import load_model, save_model
from edge_sameo.contract import CONTRACT_FILE, ExportContract
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_bytes
from edge_sameo.modeling import EfficientSam

SAMEO_FILE = "sameo_decoder.pt"
MODEL_FILE = "model.pt"
ONNX_DIR = "onnx"


def sameo_decoder_checkpoint(
    model: EfficientSam, meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"decoder": state (keys without the ``mask_decoder.`` prefix), "config": ...}``."""
    return {
        "decoder": {k: v.detach().cpu() for k, v in model.mask_decoder.state_dict().items()},
        "config": model.config.to_dict(),
        "meta": dict(meta or {}),
    }


def write_sameo_decoder(
    model: EfficientSam, path: str | Path, meta: Mapping[str, Any] | None = None
) -> Path:
    buf = io.BytesIO()
    torch.save(sameo_decoder_checkpoint(model, meta), buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


@dataclass(frozen=True)
class TrainExportConfig:
    """What ``edge-sameo train export`` writes (see the module docstring).

    checkpoint: a trained checkpoint (any format ``load_model`` reads; ``base`` for a
    SAMEO decoder-only file). engine: ``None`` or a TensorRT precision.
    """

    checkpoint: Path
    out: Path
    base: Path | None = None
    onnx: bool = True
    engine: str | None = None
    opset: int = 17
    check: bool = True
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "out", Path(self.out))
        if self.base is not None:
            object.__setattr__(self, "base", Path(self.base))
        if self.engine is not None and not self.onnx:
            raise InputError("--engine needs the ONNX export (drop --no-onnx)")


@dataclass(frozen=True)
class ExportResult:
    sameo_decoder: Path
    model: Path
    onnx_dir: Path | None = None
    #: None without a previous export in the folder, else whether encoder.onnx changed.
    encoder_changed: bool | None = None
    engines: list[str] = field(default_factory=list)


def export_trained(cfg: TrainExportConfig) -> ExportResult:
    model = load_model(cfg.checkpoint, base=cfg.base)
    meta = {"source": str(cfg.checkpoint), **dict(cfg.meta)}
    sameo = write_sameo_decoder(model, cfg.out / SAMEO_FILE, meta)
    full = cfg.out / MODEL_FILE
    save_model(model, full, meta)
    if not cfg.onnx:
        return ExportResult(sameo, full)
    from edge_sameo.engines.export import ExportConfig, export_onnx

    onnx_dir = cfg.out / ONNX_DIR
    before = None
    if (onnx_dir / CONTRACT_FILE).is_file():
        before = ExportContract.read(onnx_dir).sha256.get("encoder.onnx")
    contract = export_onnx(model, ExportConfig(out_dir=onnx_dir, opset=cfg.opset, check=cfg.check))
    after = contract.sha256.get(contract.encoder.file)
    changed = None if before is None else before != after
    built: list[str] = []
    if cfg.engine is not None:
        from edge_sameo.engines.tensorrt_build import BuildConfig, build_engines

        for eng in build_engines(BuildConfig(onnx_dir=onnx_dir, precision=cfg.engine)):
            built.append(f"{eng.graph}: {'built' if eng.built else 'reused'} {eng.path}")
    return ExportResult(sameo, full, onnx_dir, changed, built)

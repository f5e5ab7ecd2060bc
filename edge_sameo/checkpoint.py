"""Loading and saving checkpoints — every supported format behind one function.

Formats read by :func:`load_model`:

* **original EfficientSAM**: ``{"model": state_dict}`` (278 keys, loaded strictly);
  a bare state_dict with the same keys is accepted too. The variant (vitt/vits) is
  recognised from the tensor shapes.
* **SAMEO decoder**: ``{"decoder": mask_decoder_state}``, optionally with
  ``"encoder"`` / ``"prompt_encoder"`` states and a ``"config"``, applied over a
  base EfficientSAM (``base=``: a checkpoint path, or a model). Keys may carry the
  ``mask_decoder.`` / ``image_encoder.`` / ``prompt_encoder.`` prefix or not. The
  base's own decoder is kept as ``modal_decoder`` (visible masks beside amodal ones).
* **edge-sameo**: ``{"format": "edge-sameo", "version": 1, "config": {...},
  "state_dict": {...}, "meta": {...}}`` written by :func:`save_model`.

Every file is read with ``torch.load(weights_only=True)``: a checkpoint that carries
pickled code is refused and the code never runs.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

import torch

from edge_sameo.build import CONFIGS, build_model
from edge_sameo.errors import CheckpointError
from edge_sameo.io import atomic_write_bytes
from edge_sameo.modeling import EfficientSam, MaskRefiner, ModelConfig, RefinerConfig

FORMAT_NAME = "edge-sameo"
FORMAT_VERSION = 1

#: (checkpoint section, state_dict prefix in the full model)
SAMEO_PARTS = (
    ("encoder", "image_encoder."),
    ("prompt_encoder", "prompt_encoder."),
    ("decoder", "mask_decoder."),
)

StateDict = dict[str, torch.Tensor]


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, errors naming the file."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint is a directory, not a file: {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch buries the reason in a long message: a line naming a pickle GLOBAL is a
        # pickled object (a model class, or code); anything else means a corrupt file.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        objects = [ln for ln in lines if "GLOBAL" in ln]
        if not objects:
            detail = next((ln for ln in lines if ln.startswith("Unsupported")), "unpickling failed")
            raise CheckpointError(
                f"{p}: not a readable PyTorch checkpoint "
                f"(corrupt or not a .pt file: {detail[:120]})"
            ) from None
        first = objects[0]
        text = str(exc)
        hint = ""
        if "ultralytics" in text:
            hint = " — this looks like an ultralytics YOLO checkpoint; pass it as the detector"
        raise CheckpointError(
            f"{p}: refused to load: the file contains pickled Python objects, not only "
            f"weights ({first[:160]}){hint}"
        ) from None
    except Exception as exc:
        # Anything else torch.load raises means the bytes are not a checkpoint: a legacy
        # (non-zip) stream of garbage reaches the unpickler, which fails with IndexError,
        # KeyError, struct.error, … depending on the bytes (RuntimeError, EOFError,
        # BadZipFile and ValueError for truncated zips).
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p}: not a readable PyTorch checkpoint (truncated or not a .pt file: {msg[:160]})"
        ) from None


def _is_state_dict(obj: Any) -> TypeGuard[Mapping[str, torch.Tensor]]:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


@functools.cache
def config_manifest(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the model a config builds (on the meta device: no memory)."""
    with torch.device("meta"):
        model = build_model(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _match_config(state: Mapping[str, torch.Tensor], source: str) -> ModelConfig:
    """The named config whose state_dict manifest equals ``state``'s."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for cfg in CONFIGS.values():
        if config_manifest(cfg) == shapes:
            return cfg
    vitt = config_manifest(CONFIGS["vitt"])
    missing = sorted(set(vitt) - set(state))
    unexpected = sorted(set(state) - set(vitt))
    detail = []
    if missing:
        detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if not detail:
        for k, v in vitt.items():
            if tuple(state[k].shape) != v:
                detail.append(f"{k} has shape {tuple(state[k].shape)}, expected {v}")
                break
    raise CheckpointError(
        f"{source}: weights match no known EfficientSAM config ({', '.join(CONFIGS)}): "
        + "; ".join(detail)
    )


def _load_strict(model: EfficientSam, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming key and shapes."""
    expected = model.state_dict()
    for k, v in state.items():
        if k not in expected:
            raise CheckpointError(f"{source}: unexpected key {k!r}")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
            )
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} missing keys (e.g. {missing[0]!r})")
    model.load_state_dict(dict(state), strict=True)


def _section(obj: Mapping[str, Any], name: str, prefix: str, source: str) -> StateDict:
    """A SAMEO section re-keyed with the full-model ``prefix``."""
    part = obj[name]
    if not _is_state_dict(part):
        raise CheckpointError(f"{source}: {name!r} is not a state_dict of tensors")
    return {(k if k.startswith(prefix) else prefix + k): v for k, v in part.items()}


def _resolve_base(base: str | Path | EfficientSam | None, source: str) -> EfficientSam:
    if base is None:
        raise CheckpointError(
            f"{source}: a SAMEO decoder checkpoint is applied over a base EfficientSAM; "
            "pass base= (the original efficient_sam_vitt.pt / vits checkpoint)"
        )
    if isinstance(base, EfficientSam):
        model = build_model(base.config, modal_decoder=base.has_modal_decoder)
        model.load_state_dict(base.state_dict())
        return model
    return load_model(base)


def _load_sameo(
    obj: Mapping[str, Any], base: str | Path | EfficientSam | None, source: str
) -> EfficientSam:
    parts = {name for name, _ in SAMEO_PARTS if name in obj}
    if parts == {name for name, _ in SAMEO_PARTS} and base is None:
        state: StateDict = {}
        for name, prefix in SAMEO_PARTS:
            state.update(_section(obj, name, prefix, source))
        cfg = (
            ModelConfig.from_dict(obj["config"])
            if isinstance(obj.get("config"), Mapping)
            else _match_config(state, source)
        )
        model = build_model(cfg)
        _load_strict(model, state, source)
        return model
    model = _resolve_base(base, source)
    if model.modal_decoder is None:
        # The base's original decoder stays beside the SAMEO one as the modal
        # (visible-mask) head: one embedding then yields visible and amodal masks.
        model.modal_decoder = copy.deepcopy(model.mask_decoder)
    full = model.state_dict()
    for name, prefix in SAMEO_PARTS:
        if name in obj:
            section = _section(obj, name, prefix, source)
            expected = {k: v for k, v in full.items() if k.startswith(prefix)}
            if set(section) != set(expected):
                missing = sorted(set(expected) - set(section))
                extra = sorted(set(section) - set(expected))
                what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
                raise CheckpointError(f"{source}: {name!r} does not fit the base model ({what})")
            full.update(section)
    _load_strict(model, full, source)
    return model


def model_from_object(
    obj: Any, *, base: str | Path | EfficientSam | None = None, source: str = "checkpoint"
) -> EfficientSam:
    """Build a model from an already-loaded checkpoint object (any supported format)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source}: expected a dict checkpoint, got {type(obj).__name__}; "
            "supported: {'model': state_dict}, {'decoder': ...} (SAMEO), edge-sameo format"
        )
    if obj.get("format") == FORMAT_NAME:
        version = obj.get("version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: edge-sameo format version {version!r} is not supported"
            )
        try:
            cfg = ModelConfig.from_dict(dict(obj["config"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: bad model config: {exc}") from None
        state = obj.get("state_dict")
        if not _is_state_dict(state):
            raise CheckpointError(f"{source}: 'state_dict' is missing or not tensors")
        model = build_model(cfg, modal_decoder=any(k.startswith("modal_decoder.") for k in state))
        if obj.get("refiner_config") is not None:
            try:
                model.refiner = MaskRefiner(RefinerConfig.from_dict(dict(obj["refiner_config"])))
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{source}: bad refiner config: {exc}") from None
        _load_strict(model, state, source)
        return model.eval()
    if "decoder" in obj:
        return _load_sameo(obj, base, source)
    if "model" in obj and _is_state_dict(obj["model"]):
        state = obj["model"]
    elif _is_state_dict(obj) and any(k.startswith("image_encoder.") for k in obj):
        state = obj
    else:
        keys = ", ".join(sorted(map(str, obj))[:6])
        raise CheckpointError(
            f"{source}: not an EfficientSAM/SAMEO/edge-sameo checkpoint (top-level keys: {keys}); "
            "expected {'model': state_dict}, {'decoder': ...} or the edge-sameo format"
        )
    model = build_model(_match_config(state, source))
    _load_strict(model, state, source)
    return model


def load_model(path: str | Path, *, base: str | Path | EfficientSam | None = None) -> EfficientSam:
    """Load any supported checkpoint (see module doc) into an eval-mode CPU model.

    ``base`` is only used by SAMEO decoder checkpoints that do not carry every part.
    Raises ``CheckpointError`` naming the file and what was expected.
    """
    return model_from_object(read_checkpoint(path), base=base, source=str(path))


def load_model_or_config(
    name: str | Path, base: str | Path | EfficientSam | None = None
) -> tuple[EfficientSam, str]:
    """A checkpoint path, or a config name (``CONFIGS``) that is not a file, built with
    seeded reference weights (for speed and export checks without real weights); returns
    (model, label for reports)."""
    from edge_sameo.seeded import manifest_of, seeded_state_dict

    if str(name) in CONFIGS and not Path(name).exists():
        model = build_model(str(name))
        model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=0))
        return model, f"{name} (seeded reference weights)"
    return load_model(name, base=base), str(name)


def save_model(
    model: EfficientSam, path: str | Path, meta: Mapping[str, Any] | None = None
) -> None:
    """Write the edge-sameo format (weights + the config that built them), atomically."""
    obj = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "refiner_config": None if model.refiner is None else model.refiner.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def state_dict_digest(
    tensors: Mapping[str, torch.Tensor] | Iterable[torch.Tensor], *, header: str = ""
) -> str:
    """Hex sha256 of ``header`` (UTF-8), then of every tensor's bytes in order (C order,
    the machine's byte order: little-endian on every platform this runs on).

    A mapping (a state_dict) also hashes each key, dtype and shape before the bytes, so
    renamed, recast or reshaped weights change the digest; plain tensors are hashed by
    their bytes alone (the parity vectors' rule: sha256 over each float32 tensor's bytes).
    """
    h = hashlib.sha256(header.encode())
    items = tensors.items() if isinstance(tensors, Mapping) else ((None, t) for t in tensors)
    for name, tensor in items:
        t = tensor.detach().cpu().contiguous()
        if name is not None:
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        # Viewed as bytes: numpy has no bfloat16, and the bytes are exactly what is stored.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_digest(model: EfficientSam) -> str:
    """Key of a model's cached export (20 hex digits): its configs (the refiner's crop size
    and window growth change the export without changing any weight) and its weights."""
    refiner = None if model.refiner is None else model.refiner.config.to_dict()
    header = json.dumps([model.config.to_dict(), refiner], sort_keys=True)
    return state_dict_digest(model.state_dict(), header=header)[:20]

"""Training configuration: one frozen dataclass, filled from YAML and/or CLI overrides.

Every field is a YAML key and a ``--set key=value`` override (values are parsed as
YAML, so ``--set lr=3e-4``, ``--set train='[a.json, b.json]'`` work); the most common
ones also have their own CLI flag (see ``train/cli.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_sameo.errors import InputError
from edge_sameo.modeling import ModelConfig

MODES = ("decoder", "full")
TARGETS = ("amodal", "visible")
PROMPTS = ("modal", "amodal")
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class DatasetSpec:
    """One COCO-amodal training or validation set.

    path: the annotations JSON (native edge-sameo layout, COCOA-cls/D2SA or KINS, or a
        set written by ``edge-sameo synth`` / ``synth from-coco``); images are found
        relative to its folder unless ``image_root`` is given.
    name: a label for logs (default: the JSON's folder name).
    weight: multiplies the set's log-proportional sampling weight (1 = the recipe).
    """

    path: Path
    name: str = ""
    weight: float = 1.0
    image_root: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.image_root is not None:
            object.__setattr__(self, "image_root", Path(self.image_root))
        if not self.name:
            object.__setattr__(self, "name", self.path.parent.name or self.path.stem)
        if not self.weight > 0:
            raise InputError(f"dataset {self.name}: weight must be > 0, got {self.weight}")

    @classmethod
    def parse(cls, value: Any) -> DatasetSpec:
        """A path string, or a mapping with the fields above."""
        if isinstance(value, DatasetSpec):
            return value
        if isinstance(value, (str, Path)):
            return cls(path=Path(value))
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise InputError(f"dataset entry has unknown keys: {', '.join(sorted(unknown))}")
            if "path" not in value:
                raise InputError("dataset entry needs a 'path'")
            return cls(**dict(value))
        raise InputError(f"a dataset is a path or a mapping, not {type(value).__name__}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on (see docs/TRAINING.md for the recipe).

    Model: ``init`` is any checkpoint ``edge_sameo.checkpoint.load_model`` reads (with
    ``base`` for a SAMEO decoder-only file); without it a model is built from ``model``
    (a config name or a mapping of ``ModelConfig`` fields) with seeded random weights.

    ``mode``: ``"decoder"`` trains ``mask_decoder`` only, image and prompt encoders
    frozen (the SAMEO recipe; embeddings come from the cache when ``cache``);
    ``"full"`` trains encoder, prompt encoder and ``mask_decoder``.
    ``target``: what ``mask_decoder`` learns: ``"amodal"`` or ``"visible"`` masks.
    ``keep_modal``: for an amodal target, keep the initial decoder frozen beside the
    trained one as ``modal_decoder`` (one embedding, visible and amodal masks).

    Prompts: each instance's **amodal box with probability** ``amodal_box_prob``, else
    its modal (visible) box; each corner coordinate gets Gaussian noise of std
    ``box_jitter`` × the box side, clipped to ``box_jitter_max`` × side (detector noise).
    Instances with fewer than ``min_visible`` visible pixels always get the amodal box.

    Schedule: ``batch_size`` images per step (global: split over DDP ranks), up to
    ``max_instances`` instances of each; ``steps_per_epoch`` (default: training images
    / batch size); AdamW, linear warm-up then cosine decay to ``min_lr_ratio`` × lr.
    """

    out: Path
    train: tuple[DatasetSpec, ...]
    val: DatasetSpec | None = None
    model: str | Mapping[str, Any] = "tiny"
    init: Path | None = None
    base: Path | None = None
    mode: str = "decoder"
    target: str = "amodal"
    keep_modal: bool = True
    # prompts
    amodal_box_prob: float = 0.5
    box_jitter: float = 0.1
    box_jitter_max: float = 0.2
    min_visible: int = 16
    max_instances: int = 8
    # loss
    dice_weight: float = 1.0
    focal_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    iou_weight: float = 0.05
    #: Loss resolution: the low-res logits are bilinearly upsampled by this factor
    #: (boundaries are then supervised below a low-res pixel, as the predictor
    #: upsamples them at inference).
    loss_scale: int = 2
    #: How the logits are upsampled to the loss resolution: ``"bicubic"`` is the
    #: predictor's kernel (``edge_sameo.preprocess.upscale_masks``); ``"bilinear"`` was
    #: this project's choice before 2026-12-02 (the bundled nano was trained with it).
    loss_upsample: str = "bicubic"
    # optimisation
    epochs: int = 10
    steps_per_epoch: int | None = None
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    # machinery
    cache: bool = True
    cache_dir: Path | None = None
    cache_dtype: str = "float32"
    threads: int = 0
    device: str = "cpu"
    val_prompt: str = "modal"
    val_every: int = 1
    val_max_images: int | None = None
    save_every: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _coerce_numbers(self)
        set_(self, "out", Path(self.out))
        set_(self, "train", tuple(DatasetSpec.parse(d) for d in _as_list(self.train)))
        if self.val is not None:
            set_(self, "val", DatasetSpec.parse(self.val))
        for name in ("init", "base", "cache_dir"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, Path(value))
        if not self.train:
            raise InputError("train: at least one training dataset is needed")
        _choice("mode", self.mode, MODES)
        _choice("target", self.target, TARGETS)
        _choice("val_prompt", self.val_prompt, PROMPTS)
        _choice("device", self.device, DEVICES)
        _choice("cache_dtype", self.cache_dtype, ("float32", "float16"))
        if not 0.0 <= self.amodal_box_prob <= 1.0:
            raise InputError(f"amodal_box_prob must be in [0, 1], got {self.amodal_box_prob}")
        if self.box_jitter < 0 or self.box_jitter_max < 0:
            raise InputError("box_jitter and box_jitter_max must be >= 0")
        if self.loss_upsample not in ("bicubic", "bilinear"):
            raise InputError(
                f"loss_upsample must be 'bicubic' or 'bilinear', got {self.loss_upsample!r}"
            )
        for name in ("epochs", "batch_size", "max_instances", "loss_scale", "val_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise InputError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise InputError("lr must be > 0, weight_decay >= 0, min_lr_ratio in [0, 1]")
        if min(self.dice_weight, self.focal_weight, self.iou_weight) < 0:
            raise InputError("loss weights must be >= 0")
        if self.warmup_steps < 0 or self.save_every < 0 or self.threads < 0:
            raise InputError("warmup_steps, save_every and threads must be >= 0")
        if isinstance(self.model, Mapping):
            set_(self, "model", dict(self.model))

    # ------------------------------------------------------------------ derived

    @property
    def trains_encoder(self) -> bool:
        """Whether the encoder is trained too (``mode == "full"``)."""
        return self.mode == "full"

    @property
    def uses_cache(self) -> bool:
        """Embeddings come from the cache (frozen encoder and ``cache`` on)."""
        return self.cache and not self.trains_encoder

    @property
    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, else ``out/cache``."""
        return self.cache_dir if self.cache_dir is not None else self.out / "cache"

    def model_config(self) -> ModelConfig:
        """The ``ModelConfig`` named or described by ``model``."""
        return resolve_model_config(self.model)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-able form (paths as strings)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A config from YAML/flag fields; :class:`InputError` on unknown keys, a missing
        ``out`` or ``train``, or a bad value."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training config keys: {', '.join(unknown)}")
        missing = [k for k in ("out", "train") if k not in data]
        if missing:
            raise InputError(f"training config needs {', '.join(missing)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise InputError(f"bad training config: {exc}") from None


def resolve_model_config(model: str | Mapping[str, Any] | ModelConfig) -> ModelConfig:
    """A config name (``CONFIGS`` or ``"nano"``), a ``ModelConfig`` or its fields."""
    from edge_sameo.build import CONFIGS

    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, Mapping):
        try:
            return ModelConfig.from_dict(dict(model))
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad model config: {exc}") from None
    if model in CONFIGS:
        return CONFIGS[model]
    if model == "nano":
        from edge_sameo.train.nano import NANO_CONFIG

        return NANO_CONFIG
    raise InputError(f"unknown model config {model!r}; choose one of {', '.join(CONFIGS)}, nano")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML file (empty for an empty file); :class:`InputError` when it
    is missing, not YAML or not a mapping."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise InputError(f"config not found: {p}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{p}: a training config is a YAML mapping")
    return data


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=3e-4", "train=[a.json]"]`` -> ``{"lr": 0.0003, "train": ["a.json"]}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _coerce_numbers(obj: Any) -> None:
    """Numbers given as strings (YAML 1.1 reads ``1e-4`` as a string) become numbers."""
    kinds = {"float": float, "int": int, "int | None": int}
    for f in dataclasses.fields(obj):
        kind = kinds.get(str(f.type))
        value = getattr(obj, f.name)
        if kind is None or value is None or isinstance(value, bool):
            continue
        if isinstance(value, str) or (kind is float and isinstance(value, int)):
            try:
                object.__setattr__(obj, f.name, kind(value))
            except ValueError:
                raise InputError(f"{f.name} must be a number, got {value!r}") from None
        elif not isinstance(value, (int, float)):
            raise InputError(f"{f.name} must be a number, got {value!r}")


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, Path, Mapping, DatasetSpec)):
        return [value]
    return list(value)


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, DatasetSpec):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value

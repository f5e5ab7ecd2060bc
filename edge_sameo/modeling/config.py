"""The configuration that shapes an EfficientSAM model (pure data, no torch)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Every size that shapes an EfficientSAM model. ``vitt``/``vits`` equal the originals."""

    name: str
    img_size: int = 1024
    patch_size: int = 16
    encoder_dim: int = 192
    encoder_depth: int = 12
    encoder_heads: int = 3
    mlp_ratio: float = 4.0
    #: Resolution the ``pos_embed`` table was pretrained at (14×14 patches + class slot).
    pretrain_img_size: int = 224
    #: Width of the neck, the prompt tokens and the decoder transformer.
    embed_dim: int = 256
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    upscaling_dims: tuple[int, ...] = (64, 32)
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    max_num_points: int = 6

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size")
        if self.encoder_dim % self.encoder_heads:
            raise ValueError("encoder_heads must divide encoder_dim")
        if (self.embed_dim // 2) % self.decoder_heads:
            raise ValueError("decoder_heads must divide embed_dim / 2")
        if self.max_num_points < 2:
            raise ValueError("max_num_points must be >= 2 (a box is two points)")
        if self.iou_head_depth < 2:
            raise ValueError("iou_head_depth must be >= 2")

    @property
    def grid_size(self) -> int:
        """Side of the image-embedding grid (64 for the originals)."""
        return self.img_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-res mask logits (256 for the originals)."""
        return self.grid_size * 2 ** len(self.upscaling_dims)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready fields (``upscaling_dims`` as a list)."""
        d = dataclasses.asdict(self)
        d["upscaling_dims"] = list(self.upscaling_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Parse :meth:`to_dict`'s form; ``ValueError`` on unknown fields."""
        return cls(**checked_fields(cls, d, "model config", int_tuples=("upscaling_dims",)))


def checked_fields(
    cls: type, d: dict[str, Any], what: str, int_tuples: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``d`` as keyword arguments of the dataclass ``cls``: unknown keys raise ``ValueError``
    naming ``what``; the fields in ``int_tuples`` (lists in JSON) become tuples of ints."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} fields: {', '.join(unknown)}")
    out = dict(d)
    for name in int_tuples:
        if name in out:
            out[name] = tuple(int(x) for x in out[name])
    return out

"""The object-resolution mask refiner: a small convolutional U-Net on one crop per box.

The image encoder sees the whole frame at a coarse grid (16-px tokens at 256 px), so an
object spans only a few tokens and there is little shape left to complete behind an
occluder. The refiner looks again at each object at its own resolution: per box, a
``crop × crop`` window of the frame (RGB), a channel marking the prompt box and, when the
model has them, the decoders' amodal and visible logits resampled into the same window
(``edge_sameo.refine`` builds these inputs and pastes the outputs back). It returns two
logit maps in that window: the amodal mask and the visible mask. All boxes of a frame go
through it in one batch, so the encoder still runs once per frame.

A pure ``nn.Module``: convolutions, batch norm (folded at export), ReLU, max-pool and
nearest upsampling only — operators every runtime and TensorRT/INT8 handle well.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edge_sameo.modeling.config import checked_fields

#: Input channels, in order: RGB (ImageNet-normalised), the prompt box (1 inside, 0
#: outside), the amodal and the visible decoder logits (clipped to ±LOGIT_CLIP, / LOGIT_CLIP),
#: and with ``RefinerConfig.occluders`` the other boxes' visible logits (the same scale).
RGB_CHANNELS = 3
BOX_CHANNELS = 1
LOGIT_CHANNELS = 2
OCCLUDER_CHANNELS = 1
#: Outputs, in order: amodal logits, visible logits.
OUT_CHANNELS = 2
#: Logits enter a refiner clipped to ±LOGIT_CLIP and divided by it (the decoders' logits in
#: ``edge_sameo.refine.crop_inputs``, a cascade stage's logits in :class:`MaskRefiner`).
LOGIT_CLIP = 10.0


@dataclass(frozen=True)
class RefinerConfig:
    """Sizes of the refiner. ``crop``: side of the window resampled per box (pixels);
    ``widths``: channels per U-Net level (each level halves the resolution);
    ``use_logits``: whether the decoders' logits are inputs (else RGB + box only);
    ``grow``: the window is the prompt box united with the coarse amodal mask's box,
    grown by this factor about its centre (hidden parts beyond a visible box fall in);
    ``residual``: the outputs are corrections added to the input logits (rescaled by
    ``logit_scale``), so an untrained refiner starts from the decoders' masks;
    ``global_dim``, ``stages``: see the fields."""

    crop: int = 64
    widths: tuple[int, ...] = (8, 16, 32, 64)
    use_logits: bool = True
    grow: float = 1.6
    residual: bool = False
    logit_scale: float = 10.0
    #: Width of a fully connected block across the whole bottleneck (0: none). Every
    #: output position then sees the whole object: the shape prior that completing a
    #: hidden part needs (convolutions alone see a neighbourhood).
    global_dim: int = 0
    #: U-Nets in a cascade: each stage after the first sees the RGB and box channels and
    #: the previous stage's two logit maps in place of the decoders' (same window, same
    #: crop), and corrects them; the last stage's logits are the output.
    stages: int = 1
    #: A last input channel with the visible logits of the frame's other boxes (per pixel the
    #: largest): where something in front of this object can hide its parts, and where the
    #: visible part ends at another object rather than at the object's own edge. Needs
    #: ``use_logits``; every cascade stage sees it.
    occluders: bool = False
    #: Test-time augmentation inside the graph: the last stage runs on its inputs and on
    #: their left-right mirror, and its logits are the mean of the two (the mirror's mirrored
    #: back). The stages before it run once, so a two-stage cascade does 1.5x the work.
    #: Weights are unchanged: any trained refiner can be switched to it.
    mirror: bool = False

    def __post_init__(self) -> None:
        if len(self.widths) < 2:
            raise ValueError("the refiner needs at least two levels")
        if self.crop % 2 ** (len(self.widths) - 1):
            raise ValueError(f"crop {self.crop} must divide by 2^(levels-1)")
        if self.grow < 1.0:
            raise ValueError(f"grow must be >= 1, got {self.grow}")
        if self.global_dim < 0:
            raise ValueError(f"global_dim must be >= 0, got {self.global_dim}")
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if self.occluders and not self.use_logits:
            raise ValueError("the occluder channel needs the decoders' logits as inputs")
        if self.residual and not self.use_logits:
            raise ValueError("a residual refiner needs the decoders' logits as inputs")

    @property
    def prompt_channels(self) -> int:
        """The channels before the logits: RGB and the box."""
        return RGB_CHANNELS + BOX_CHANNELS

    @property
    def in_channels(self) -> int:
        """C_in of the input crops: RGB and box, plus both decoders' logits when
        ``use_logits``, plus the occluder channel when ``occluders``."""
        logits = LOGIT_CHANNELS if self.use_logits else 0
        return self.prompt_channels + logits + (OCCLUDER_CHANNELS if self.occluders else 0)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready fields (``widths`` as a list)."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefinerConfig:
        """Parse :meth:`to_dict`'s form; ``ValueError`` on unknown fields."""
        return cls(**checked_fields(cls, d, "refiner config", int_tuples=("widths",)))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MaskRefiner(nn.Module):
    """(N, C_in, crop, crop) float32 inputs -> (N, 2, crop, crop) float32 logits."""

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        self.config = config
        # Stages 2.. of a cascade: the same U-Net, fed RGB + box + the previous logits.
        later = dataclasses.replace(config, stages=1, use_logits=True)
        self.cascade = nn.ModuleList([MaskRefiner(later) for _ in range(config.stages - 1)])
        w = config.widths
        self.down = nn.ModuleList(
            [_block(config.in_channels if i == 0 else w[i - 1], w[i]) for i in range(len(w))]
        )
        self.up = nn.ModuleList([_block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1)])
        side = config.crop // 2 ** (len(w) - 1)
        self.bottleneck_shape = (w[-1], side, side)
        self.glob: nn.Sequential | None = None
        if config.global_dim:
            flat = w[-1] * side * side
            self.glob = nn.Sequential(
                nn.Linear(flat, config.global_dim),
                nn.ReLU(inplace=True),
                nn.Linear(config.global_dim, flat),
            )
        self.head = nn.Conv2d(w[0], OUT_CHANNELS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, crop, crop) float32 inputs -> (N, 2, crop, crop) float32 amodal and
        visible logits of the last cascade stage."""
        return self.forward_stages(x)[-1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The logits of every cascade stage, first to last. A stage after the first sees the
        RGB and box channels, the previous stage's logits and the occluder channel. With
        ``config.mirror`` the last stage's logits are the mean over the mirror."""
        mirror = self.config.mirror
        unets = [self, *self.cascade]
        outs: list[torch.Tensor] = []
        keep = x[:, : self.config.prompt_channels]
        extra = x[:, self.config.prompt_channels + LOGIT_CHANNELS :]  # the occluder channel
        for i, stage in enumerate(unets):
            assert isinstance(stage, MaskRefiner)
            if i:
                prev = torch.clamp(outs[-1], -LOGIT_CLIP, LOGIT_CLIP) / LOGIT_CLIP
                x = torch.cat([keep, prev, extra], dim=1)
            if mirror and i == len(unets) - 1:
                n = x.shape[0]
                both = stage._unet(torch.cat([x, torch.flip(x, dims=[3])], dim=0))
                outs.append((both[:n] + torch.flip(both[n:], dims=[3])) * 0.5)
            else:
                outs.append(stage._unet(x))
        return outs

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        if self.glob is not None:
            x = x + self.glob(x.flatten(1)).reshape(-1, *self.bottleneck_shape)
        for i in range(len(self.up) - 1, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        out = self.head(x)
        if self.config.residual:
            start = self.config.prompt_channels
            out = out + inputs[:, start : start + LOGIT_CHANNELS] * self.config.logit_scale
        return out

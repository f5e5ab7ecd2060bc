"""EfficientSAM ViT image encoder (plain ViT with global attention + conv neck)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_sameo.modeling.common import LayerNorm2d, attention


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution: (B, 3, S, S) -> (B, C, S/p, S/p)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) image -> (B, C, S/p, S/p) patch embeddings."""
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens -> (B, N, C) tokens."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v, fused=self.fused)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two-layer perceptron with exact GELU: C -> ``hidden`` -> C on the last axis."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as the original
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; LayerNorm eps 1e-6 as in the original encoder."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens -> (B, N, C) tokens."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + P*P, C) pretrain embedding -> (1, grid, grid, C), class slot dropped.

    Bicubic, ``align_corners=False``, exactly as the original ``get_abs_pos``.
    """
    abs_pos = pos_embed[:, 1:]
    size = round(abs_pos.shape[1] ** 0.5)
    if size * size != abs_pos.shape[1]:
        raise ValueError(f"pos_embed has {abs_pos.shape[1]} patch slots, not a square number")
    abs_pos = abs_pos.reshape(1, size, size, -1)
    if size == grid:
        return abs_pos
    resized = F.interpolate(
        abs_pos.permute(0, 3, 1, 2), size=(grid, grid), mode="bicubic", align_corners=False
    )
    return resized.permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """(B, 3, S, S) normalised image -> (B, neck_dim, S/p, S/p) embedding."""

    _frozen_pos: torch.Tensor | None

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        neck_dim: int,
        pretrain_img_size: int,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.grid_size = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        num_positions = (pretrain_img_size // patch_size) ** 2 + 1
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        # Non-persistent: never in the state_dict, but follows .to(device).
        self.register_buffer("_frozen_pos", None, persistent=False)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(neck_dim),
            nn.Conv2d(neck_dim, neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dim),
        )

    def abs_pos(self) -> torch.Tensor:
        """(1, grid, grid, C) positional embedding for the working resolution."""
        if self._frozen_pos is not None:
            return self._frozen_pos
        return resize_pos_embed(self.pos_embed, self.grid_size)

    def freeze_pos_embed(self) -> None:
        """Precompute the resized ``pos_embed`` as a constant (inference/export only:
        the bicubic resize is not exportable to TensorRT and need not run every frame)."""
        with torch.no_grad():
            self._frozen_pos = resize_pos_embed(self.pos_embed, self.grid_size).detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float normalised RGB, S = ``img_size`` -> (B, neck_dim, S/p, S/p)
        image embeddings; ``ValueError`` for another input size."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"encoder expects (B, 3, {self.img_size}, {self.img_size}), got {tuple(x.shape)}"
            )
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # B H W C
        x = x + self.abs_pos()
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        for blk in self.blocks:
            x = blk(x)
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.neck(x)

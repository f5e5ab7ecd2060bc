"""Small building blocks shared by the EfficientSAM encoder and decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPBlock(nn.Module):
    """``num_layers`` × (Linear → act) followed by a Linear head.

    The layout (``layers.{i}.0`` + ``fc``) mirrors the original checkpoint keys.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        act: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden_dim), act()) for d in dims_in)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., input_dim) -> (..., output_dim)."""
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor (eps 1e-6, as the original)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), normalised over C."""
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, fused: bool) -> torch.Tensor:
    """Softmax attention over (..., tokens, head_dim) tensors.

    ``fused`` uses ``scaled_dot_product_attention`` (memory-efficient kernels: the
    encoder's 4096×4096 score matrix is never materialised). The explicit form scales
    Q *before* Q·Kᵀ — mathematically the original's ``(q @ kᵀ) * scale`` — so that
    exported graphs keep the pattern TensorRT fuses into one attention kernel.
    """
    if fused:
        return F.scaled_dot_product_attention(q, k, v)
    q = q * (q.shape[-1] ** -0.5)
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v

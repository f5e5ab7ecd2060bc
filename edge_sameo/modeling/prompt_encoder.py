"""EfficientSAM prompt encoder: points/boxes -> sparse tokens (no dense/mask prompts)."""

from __future__ import annotations

import math

import torch
from torch import nn

#: Point labels of the original model. Boxes are two points labelled 2 (top-left)
#: and 3 (bottom-right); padding slots carry coordinate -1 and label -1.
LABEL_PAD = -1
LABEL_POINT = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding with a fixed Gaussian frequency matrix."""

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coords in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense (C, h, w) encoding of the pixel centres of an h×w grid."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(
        self, coords: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """(B, T, 2) XY pixel coords in the model frame -> (B, T, C)."""
        scale = coords.new_tensor([1.0 / image_size[1], 1.0 / image_size[0]])
        return self._pe_encoding(coords * scale)


class PromptEncoder(nn.Module):
    """Embeds (B, T, 2) points with (B, T) labels into (B, T, embed_dim) tokens."""

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, embed_dim, h, w) positional encoding of the image-embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def forward(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords: (B, T, 2) float32 XY in model-input pixels (-1 for padding);
        labels: (B, T) with values in {-1, 1, 2, 3}. Returns (B, T, embed_dim).

        Padding slots get PE(-0.5, -0.5) + ``invalid_points`` — not zeroed as in SAM.
        Label masks are multiplied in (rather than boolean-indexed) so the graph
        exports without data-dependent shapes; adding an exact 0.0 changes nothing.
        """
        emb = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        labels = labels.unsqueeze(-1)
        table = (
            (LABEL_PAD, self.invalid_points.weight),
            (LABEL_POINT, self.point_embeddings.weight),
            (LABEL_BOX_TOP_LEFT, self.bbox_top_left_embeddings.weight),
            (LABEL_BOX_BOTTOM_RIGHT, self.bbox_bottom_right_embeddings.weight),
        )
        for value, weight in table:
            emb = emb + (labels == value).to(emb.dtype) * weight
        return emb

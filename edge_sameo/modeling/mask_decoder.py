"""EfficientSAM mask decoder: tokens + image embedding -> 3 candidate masks and their IoU."""

from __future__ import annotations

import torch
from torch import nn

from edge_sameo.modeling.common import MLPBlock
from edge_sameo.modeling.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int,
        iou_head_depth: int,
        iou_head_hidden_dim: int,
        upscaling_layer_dims: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1 if num_multimask_outputs > 1 else 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        layers: list[nn.Module] = []
        dim = transformer_dim
        for idx, out_dim in enumerate(upscaling_layer_dims):
            last = idx == len(upscaling_layer_dims) - 1
            layers.append(
                nn.Sequential(
                    nn.ConvTranspose2d(dim, out_dim, kernel_size=2, stride=2),
                    nn.Identity() if last else nn.GroupNorm(1, out_dim),
                    nn.GELU(),
                )
            )
            dim = out_dim
        self.final_output_upscaling_layers = nn.ModuleList(layers)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLPBlock(transformer_dim, transformer_dim, dim, 2, nn.GELU)
            for _ in range(self.num_mask_tokens)
        )
        # The original builds the IoU head with ``iou_head_depth - 1`` hidden layers.
        self.iou_prediction_head = MLPBlock(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth - 1, nn.GELU
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompts against one image (or N images).

        image_embeddings: (1 or N, C, h, w) float32; image_pe: (1, C, h, w);
        sparse_prompt_embeddings: (N, T, C). Returns low-res mask logits
        (N, M, 4h, 4w) and IoU predictions (N, M), M = 3 with ``multimask_output``
        (candidates 1..3, as the original) else 1.
        """
        n = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, n):
            raise ValueError(
                f"{image_embeddings.shape[0]} image embeddings for {n} prompts (need 1 or {n})"
            )
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings)
        if multimask_output and self.num_multimask_outputs > 1:
            return masks[:, 1:], iou_pred[:, 1:]
        return masks[:, :1], iou_pred[:, :1]

    def predict_masks(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, tokens_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens: (N, num_mask_tokens, 4h, 4w) logits, (N, num_mask_tokens) IoU.

        A single (1, C, h, w) image embedding is *broadcast* against the N prompts rather
        than tiled: until the first image-to-token update every box sees the same image
        keys, so their projections are computed once — the same numbers as the original's
        tiling, at a fraction of the first layer's cost.
        """
        n = tokens_in.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), tokens_in], dim=1)
        _, c, h, w = image_embeddings.shape
        hs, src = self.transformer(image_embeddings, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = src.expand(n, -1, -1).transpose(1, 2).reshape(n, c, h, w)
        for layer in self.final_output_upscaling_layers:
            upscaled = layer(upscaled)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)

"""EfficientSAM mask decoder: tokens + image embedding -> 3 candidate masks and their IoU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_sameo.modeling.common import MLPBlock
from edge_sameo.modeling.transformer import TwoWayAttentionBlock, TwoWayTransformer


class MaskDecoder(nn.Module):
    """SAM's mask decoder: a two-way transformer over IoU, mask and prompt tokens, then
    transposed-convolution upscaling and hypernetwork MLPs -> candidate masks and their IoU."""

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
        #: ``True`` computes the upscaling in the token layout (see ``_upscale_subpixel``):
        #: the same numbers without the channel transposes around each transposed
        #: convolution. Export switches it on; ``False`` is the
        #: original code path (the benchmark baseline).
        self.subpixel_upscaling = False

    def set_token_layout(self, on: bool) -> None:
        """Token-layout upscaling, few-key image->token attention and few-query
        token->image attention where the image differs per box (after the first layer's
        image update); the same numbers up to rounding."""
        self.subpixel_upscaling = on
        for i, layer in enumerate(self.transformer.layers):
            assert isinstance(layer, TwoWayAttentionBlock)
            layer.cross_attn_image_to_token.few_keys = on
            # the first layer's image is the one embedding broadcast to every box (as the
            # exported decoder takes it): its projections run once, cheaper than
            # unprojected attention
            layer.cross_attn_token_to_image.few_queries = on and i > 0
            layer.cross_attn_image_to_token.fold_queries = on and i > 0
        self.transformer.final_attn_token_to_image.few_queries = on

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

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        if self.subpixel_upscaling:
            masks = self._upscale_subpixel(src.expand(n, -1, -1), hyper_in, h, w)
            return masks, self.iou_prediction_head(iou_token_out)
        upscaled = src.expand(n, -1, -1).transpose(1, 2).reshape(n, c, h, w)
        for layer in self.final_output_upscaling_layers:
            upscaled = layer(upscaled)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)

    def _upscale_subpixel(
        self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int
    ) -> torch.Tensor:
        """The upscaling and the hypernetwork product of ``predict_masks`` in token layout.

        A 2×2 stride-2 transposed convolution maps every input pixel to its own 2×2 block
        of output pixels: it is one matrix product (C_in -> 4·C_out) per pixel. So the
        (N, h·w, C) tokens are multiplied straight through both layers — GroupNorm(1) is
        a norm over all of a box's values and GELU is per value, neither cares about the
        order — and only the (N, K, 4h, 4w) masks are rearranged into image order at the
        end, instead of transposing the 256- and 64-channel maps around each layer.
        """
        n = src.shape[0]
        x = src  # (N, P, C), P pixels in the order (i, j, a1, b1, a2, b2, ...)
        for layer in self.final_output_upscaling_layers:
            assert isinstance(layer, nn.Sequential)
            deconv, norm, act = layer
            assert isinstance(deconv, nn.ConvTranspose2d)
            c_in, c_out = deconv.weight.shape[:2]
            weight = deconv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
            x = x @ weight  # (N, P, 4·C_out): the 2×2 block (a, b) of every pixel
            if deconv.bias is not None:  # the same bias in each of the 4 blocks
                x = x + torch.cat([deconv.bias] * 4)
            x = x.reshape(n, -1, c_out)
            if isinstance(norm, nn.GroupNorm):
                if norm.num_groups != 1:  # pragma: no cover - EfficientSAM uses GroupNorm(1)
                    raise ValueError("subpixel upscaling supports GroupNorm(1, C) only")
                # One group over all of a box's values (any layout): GroupNorm(1).
                x = F.group_norm(x.reshape(n, 1, -1), 1, eps=norm.eps).reshape(n, -1, c_out)
                if norm.affine:
                    x = x * norm.weight + norm.bias
            x = act(x)
        masks = x @ hyper_in.transpose(1, 2)  # (N, P, K)
        levels = len(self.final_output_upscaling_layers)
        k = masks.shape[-1]
        # (N, i, j, a1, b1, ..., aL, bL, K) -> (N, K, i, a1..aL, j, b1..bL)
        masks = masks.reshape(n, h, w, *([2] * (2 * levels)), k)
        rows = [3 + 2 * t for t in range(levels)]
        cols = [4 + 2 * t for t in range(levels)]
        masks = masks.permute(0, 3 + 2 * levels, 1, *rows, 2, *cols)
        scale = 2**levels
        return masks.reshape(n, k, h * scale, w * scale)

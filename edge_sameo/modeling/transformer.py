"""SAM's two-way transformer (tokens <-> image cross-attention), as used by EfficientSAM."""

from __future__ import annotations

import torch
from torch import nn

from edge_sameo.modeling.common import MLPBlock, attention


class TwoWayAttention(nn.Module):
    """Attention with separate q/k/v projections and an optional internal downsample."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim / downsample_rate")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        #: ``True`` computes attention from many queries to a few keys (image -> prompt
        #: tokens) without splitting the queries into heads (see ``_few_keys``): the same
        #: numbers without transposing the (N, h·w, C) image side. Off = the original.
        self.few_keys = False
        #: ``True`` computes attention from a few queries (prompt tokens) to many keys (a
        #: per-box image) without projecting the keys and values (see ``_few_queries``).
        #: Off = the original.
        self.few_queries = False
        #: With ``few_keys``: take the keys back through ``q_proj`` instead of projecting
        #: the many queries (worth it when the image differs per box; see ``_few_keys``).
        self.fold_queries = False

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Nq, C), k and v (B, Nk, C) -> (B, Nq, C); a batch-1 side broadcasts."""
        if self.few_keys:
            return self._few_keys(q, k, v)
        if self.few_queries:
            return self._few_queries(q, k, v)
        out = attention(
            self._heads(self.q_proj(q)),
            self._heads(self.k_proj(k)),
            self._heads(self.v_proj(v)),
            fused=False,
        )
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))

    def _few_keys(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Multi-head attention with the queries kept as (B, Q, C) rows.

        The per-head keys are laid out block-diagonally, (B, C, H·T), so one product
        gives every head's scores side by side, (B, Q, H·T); each head's values are
        folded into its slice of ``out_proj``, (B, H·T, D), so one more product gives
        the projected output. Same sums as the head-split form; worth it when the keys
        are few (the prompt tokens) and the queries many (the image).
        """
        heads, t = self.num_heads, k.shape[1]
        d = self.internal_dim // heads
        kp = self.k_proj(k).reshape(-1, t, heads, d).permute(0, 2, 3, 1)  # (B, H, d, T)
        # the 1/sqrt(d) scale on the few keys, not on the (B, Q, C) image side
        eye = torch.eye(heads, dtype=kp.dtype, device=kp.device).reshape(heads, 1, heads, 1)
        kbd = (kp.unsqueeze(3) * (eye * d**-0.5)).reshape(-1, self.internal_dim, heads * t)
        if self.fold_queries:  # (q W_qᵀ + b_q) kbd = q (W_qᵀ kbd) + b_q kbd
            bias = self.q_proj.bias.unsqueeze(0) @ kbd  # (B, 1, H·T)
            scores = q @ (self.q_proj.weight.t() @ kbd) + bias  # (B, Q, H·T)
        else:
            scores = self.q_proj(q) @ kbd  # (B, Q, H·T)
        attn = torch.softmax(scores.unflatten(-1, (heads, t)), dim=-1).flatten(2)
        w_out = self.out_proj.weight.t().reshape(heads, 1, d, -1)  # (H, 1, d, D)
        vp = self.v_proj(v).reshape(-1, t, heads, d).transpose(1, 2)  # (B, H, T, d)
        # A broadcast product + sum, not a MatMul: it is part of attention, which int8
        # recipes keep float, and it is tiny (T prompt tokens).
        v_out = (vp.unsqueeze(-1) * w_out).sum(3).reshape(vp.shape[0], heads * t, -1)
        # Each head's weights sum to 1, so every row of ``attn`` sums to H: out_proj's bias,
        # split over the heads' value rows, is added once per output row, on the small side.
        return attn @ (v_out + self.out_proj.bias / heads)

    def _few_queries(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Multi-head attention with the keys and values left unprojected.

        Each head's query is taken back through its slice of ``k_proj`` (scores
        ``(q W_q,hᵀ)(k W_k,hᵀ)ᵀ = (q W_q,hᵀ W_k,h) kᵀ``), and its attention-weighted sum of
        the raw values through its slice of ``v_proj`` afterwards (the weights sum to 1).
        ``k_proj``'s bias adds the same amount to every score of a query, which softmax
        ignores, so it drops out; ``v_proj``'s is added to the few outputs. The same
        numbers in exact arithmetic; worth it when the queries are few (the prompt
        tokens, H·T rows) and the keys many and different per box (the image after the
        first image update): no (B, h·w, C) projection, bias or head transpose remains
        (only the (B, h·w, H·T) attention weights are transposed).
        """
        t = q.shape[1]
        heads = self.num_heads
        d = self.internal_dim // heads
        c = self.k_proj.in_features  # a constant: the weight reshapes fold at export
        qp = self.q_proj(q).reshape(-1, t, heads, d).permute(0, 2, 3, 1) * (d**-0.5)  # (B,H,d,T)
        # The weight slices multiply from the left (weight @ activation): int8 recipes
        # quantize products with a constant right operand, and these belong to attention,
        # which they keep float (and they are tiny: T tokens).
        w_k = self.k_proj.weight.reshape(heads, d, c).transpose(1, 2)  # (H, C, d)
        qk = (w_k @ qp).permute(0, 2, 1, 3).reshape(-1, c, heads * t)  # (B, C, H·T)
        # (B, h·w, H·T): the image rows stay in their (B, h·w, C) layout
        attn = torch.softmax(k @ qk, dim=1)
        ctx = (attn.transpose(1, 2) @ v).reshape(-1, heads, t, c).transpose(2, 3)  # (B,H,C,T)
        out = self.v_proj.weight.reshape(heads, d, c) @ ctx  # (B, H, d, T)
        out = out + self.v_proj.bias.reshape(heads, d, 1)
        return self.out_proj(out.permute(0, 3, 1, 2).reshape(-1, t, self.internal_dim))


class TwoWayAttentionBlock(nn.Module):
    """Self-attn on tokens, token->image attn, MLP, image->token attn (post-norm)."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = TwoWayAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = TwoWayAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, embedding_dim, 1, nn.GELU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = TwoWayAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, T, C) tokens with query_pe (B, T, C); keys (B or 1, h*w, C) image
        with key_pe (1, h*w, C) -> updated queries (B, T, C) and keys (B, h*w, C)."""
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        queries = self.norm1(queries + self.self_attn(queries, queries, queries))

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token-to-image attention: prompt tokens
    and image embedding attend to each other."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, attention_downsample_rate, i == 0
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = TwoWayAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding: (B or 1, C, h, w); image_pe: (1, C, h, w); point_embedding:
        (B, T, C). A batch-1 image broadcasts against the B prompts (see MaskDecoder).

        Returns the processed tokens (B, T, C) and image keys (B, h*w, C).
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys

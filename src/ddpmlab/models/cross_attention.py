"""Text conditioning for the U-Net: cross-attention to prompt tokens and the learned null context.

Rombach et al. 2022 (Latent Diffusion), Sec. 3.3: Attention(Q, K, V) with Q = W_Q phi(x), K = W_K tau(y),
V = W_V tau(y), where phi(x) (B, C, H, W) are image features and tau(y) (B, L, D) the prompt's token embeddings.
Saharia et al. 2022 (Imagen), Sec. 2.2: the pooled text embedding is also added to the time embedding.
Shapes: tokens (B, L, D), mask (B, L) bool (True = a real token), pooled (B, D), null (B,) bool.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import attend, groups_for


class CrossAttention(nn.Module):
    """Multi-head attention from the H*W positions to the prompt tokens, pre-normalised, residual."""

    def __init__(self, channels: int, context_dim: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"cross-attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups_for(channels), channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)  # starts as the identity, like the self-attention blocks
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        d = C // self.heads
        q = self.q(self.norm(x)).reshape(B, self.heads, d, H * W).transpose(-1, -2)  # (B, heads, HW, d)
        k, v = self.kv(tokens).reshape(B, tokens.shape[1], 2, self.heads, d).permute(2, 0, 3, 1, 4)  # (B, heads, L, d)
        out = attend(q, k.to(q.dtype), v.to(q.dtype), mask[:, None, None, :])
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class TextConditioning(nn.Module):
    """The learned null context (one token and a pooled vector) and the pooled-embedding projection."""

    def __init__(self, context_dim: int, emb_dim: int):
        super().__init__()
        self.context_dim = context_dim
        self.null_token = nn.Parameter(torch.randn(context_dim) * context_dim**-0.5)
        self.null_pooled = nn.Parameter(torch.randn(context_dim) * context_dim**-0.5)
        self.pooled = nn.Linear(context_dim, emb_dim)
        nn.init.zeros_(self.pooled.weight)  # a text-conditional network starts as the unconditional one
        nn.init.zeros_(self.pooled.bias)

    def forward(self, context: object | None, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, L, D), mask (B, L) and the pooled embedding (B, emb_dim), null rows replaced by the null context.

        context: a TextContext, a tuple (tokens, mask, pooled), or None (every row is the null context).
        """
        from ..text.context import as_context

        if context is None:
            tokens = self.null_token.expand(batch, 1, -1)
            mask = torch.ones(batch, 1, dtype=torch.bool, device=tokens.device)
            return tokens, mask, self.pooled(self.null_pooled.expand(batch, -1))
        ctx = as_context(context)
        if ctx.tokens.shape[-1] != self.context_dim or ctx.tokens.shape[0] != batch:
            raise ValueError(f"context tokens are {tuple(ctx.tokens.shape)}; this network takes (B={batch}, L, "
                             f"{self.context_dim}) (model.context_dim = the text encoder's width)")
        device, dtype = self.null_token.device, self.null_token.dtype  # an encoder may live on another device
        tokens, pooled = ctx.tokens.to(device, dtype), ctx.pooled.to(device, dtype)
        mask = ctx.mask.to(device, torch.bool)
        if ctx.null is not None:
            null = ctx.null.to(tokens.device)
            first = torch.arange(tokens.shape[1], device=tokens.device) == 0  # the null context is one token
            null_tokens = torch.where(first[:, None], self.null_token, torch.zeros_like(self.null_token))
            tokens = torch.where(null[:, None, None], null_tokens, tokens)
            mask = torch.where(null[:, None], first, mask)
            pooled = torch.where(null[:, None], self.null_pooled, pooled)
        return tokens, mask, self.pooled(pooled)

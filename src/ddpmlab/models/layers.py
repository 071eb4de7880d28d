"""Building blocks of the U-Net: time embedding, residual blocks, attention, resampling.

Notation: t (B,) timesteps, emb (B, D) the time (+ class) embedding, x (B, C, H, W) feature maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Vaswani et al. 2017 / Ho et al. 2020, App. B: [sin(t w_k), cos(t w_k)], w_k = max_period^(-k/half); (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def groups_for(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides `channels` (GroupNorm needs a divisor)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t through a two-layer MLP (Ho et al. 2020, App. B); optional class embedding."""

    def __init__(self, base_dim: int, emb_dim: int, num_classes: int = 0):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # Class K is the "null" label used for unconditional / classifier-free guidance.
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.mlp(sinusoidal_embedding(t, self.base_dim))
        if self.label is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.label(y.long())
        return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between, with a residual path (Ho et al. 2020)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups_for(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups_for(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stabler early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


def matmul_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q (B, heads, N, d), k, v (B, heads, M, d), as two matmuls and a softmax.

    mask (B, 1, 1, M) bool, True = attend: keys where it is False get weight 0 (a key padding mask).
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).to(v.dtype) @ v


SCORES_PER_CHUNK = 1 << 20  # attention scores (B * heads * N * M) per chunk when sampling: 2 MiB in bf16


def cpu_bf16_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention in bf16 on the CPU, where two matmuls and a softmax run 2-5x faster than SDPA's kernels.

    Without autograd (sampling), large batches go through in chunks whose scores stay in the CPU's cache:
    at batch 512, 16 heads and 64 positions, 37 ms instead of 166 ms per call (benchmarks/RESULTS.md, levers).
    """
    B, heads, N, _ = q.shape
    M = k.shape[-2]
    rows = max(1, SCORES_PER_CHUNK // (heads * N * M))
    if torch.is_grad_enabled() or B * heads * N * M <= 8 * SCORES_PER_CHUNK:
        return matmul_attention(q, k, v, mask)
    out = torch.empty_like(q, dtype=v.dtype)
    for i in range(0, B, rows):
        part = None if mask is None else mask[i : i + rows]
        out[i : i + rows] = matmul_attention(q[i : i + rows], k[i : i + rows], v[i : i + rows], part)
    return out


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1): the bf16 CPU path there, SDPA elsewhere."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        return cpu_bf16_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, pre-normalised, residual."""

    def __init__(self, channels: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups_for(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        out = attend(q, k, v)  # (B, heads, HW, C/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Halve H and W with a strided 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            # sampling on the CPU: the same pixels, twice as fast as interpolate's kernel at 16 -> 32 (levers)
            return self.conv(x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

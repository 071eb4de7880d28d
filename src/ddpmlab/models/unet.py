"""The DDPM U-Net (Ho et al. 2020, App. B), configurable from a dataclass.

Shapes: x (B, C, H, W) -> (B, C_out, H, W); t (B,); y (B,) class labels or None;
context: encoded prompts (ddpmlab.text.TextContext or (tokens (B, L, D), mask (B, L), pooled (B, D))) or None.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cross_attention import CrossAttention, TextConditioning
from .layers import Attention, Downsample, ResBlock, TimeEmbedding, Upsample, groups_for


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    out_channels: int | None = None  # defaults to in_channels
    image_size: int = 28
    channels: int = 32  # width of the first level
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (7,)  # feature-map sizes (px) that get self-attention
    heads: int = 1
    dropout: float = 0.0
    num_classes: int = 0  # > 0 adds a label embedding with one extra "null" class
    context_dim: int = 0  # > 0: cross-attention to prompt tokens of this width wherever there is self-attention


def check_image_size(image_size: int, levels: int) -> None:
    """The U-Net halves the image levels - 1 times; each halving must be exact."""
    if image_size % (2 ** (levels - 1)):
        raise ValueError(
            f"image size {image_size} cannot be halved {levels - 1} times; "
            f"use an image size divisible by {2 ** (levels - 1)} or fewer model.channel_mults"
        )


class UNet(nn.Module):
    """Residual U-Net with sinusoidal time embedding, optional attention, class and text conditioning."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        check_image_size(cfg.image_size, len(cfg.channel_mults))
        self.cfg = cfg
        ch = cfg.channels
        emb_dim = 4 * ch
        self.embed = TimeEmbedding(ch, emb_dim, cfg.num_classes)
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.text = TextConditioning(cfg.context_dim, emb_dim) if cfg.context_dim else None

        widths = [ch * m for m in cfg.channel_mults]
        self.down = nn.ModuleList()
        skips, size, cur = [ch], cfg.image_size, ch
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                self.down.append(self._block(cur, width, emb_dim, size))
                cur = width
                skips.append(cur)
            if level < len(widths) - 1:
                self.down.append(Downsample(cur))
                skips.append(cur)
                size //= 2

        self.mid = nn.ModuleList(
            [ResBlock(cur, cur, emb_dim, cfg.dropout), Attention(cur, cfg.heads), ResBlock(cur, cur, emb_dim, cfg.dropout)]
        )
        self.mid_cross = CrossAttention(cur, cfg.context_dim, cfg.heads) if cfg.context_dim else None

        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(self._block(cur + skips.pop(), width, emb_dim, size))
                cur = width
            if level > 0:
                self.up.append(Upsample(cur))
                size *= 2

        self.head = nn.Sequential(
            nn.GroupNorm(groups_for(cur), cur), nn.SiLU(), nn.Conv2d(cur, cfg.out_channels or cfg.in_channels, 3, padding=1)
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def _block(self, in_ch: int, out_ch: int, emb_dim: int, size: int) -> nn.Module:
        res = ResBlock(in_ch, out_ch, emb_dim, self.cfg.dropout)
        if size in self.cfg.attention_resolutions:
            cross = CrossAttention(out_ch, self.cfg.context_dim, self.cfg.heads) if self.cfg.context_dim else None
            return _ResAttn(res, Attention(out_ch, self.cfg.heads), cross)
        return res

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, context: object | None = None
    ) -> torch.Tensor:
        emb = self.embed(t, y)
        text = None
        if self.text is not None:  # context None: every row gets the learned null context
            tokens, mask, pooled_emb = self.text(context, x.shape[0])
            emb, text = emb + pooled_emb, (tokens, mask)
        elif context is not None:
            raise ValueError("this U-Net takes no text context (model.context_dim = 0); pass context=None")
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h) if isinstance(layer, Downsample) else _block_forward(layer, h, emb, text)
            hs.append(h)
        h = self.mid[1](self.mid[0](h, emb))
        if self.mid_cross is not None:
            h = self.mid_cross(h, *text)
        h = self.mid[2](h, emb)
        for layer in self.up:
            skip = None if isinstance(layer, Upsample) else hs.pop()
            h = layer(h) if skip is None else _block_forward(layer, torch.cat([h, skip], dim=1), emb, text)
        return self.head(h)


def _block_forward(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor, text: tuple | None) -> torch.Tensor:
    """A residual block, or a residual + attention block that also reads the prompt tokens."""
    return layer(h, emb, text) if isinstance(layer, _ResAttn) else layer(h, emb)


class _ResAttn(nn.Module):
    """A residual block followed by self-attention and, in text-conditional networks, cross-attention."""

    def __init__(self, res: ResBlock, attn: Attention, cross: CrossAttention | None = None):
        super().__init__()
        self.res, self.attn, self.cross = res, attn, cross

    def forward(self, x: torch.Tensor, emb: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor] | None = None):
        h = self.attn(self.res(x, emb))
        return h if self.cross is None else self.cross(h, *text)

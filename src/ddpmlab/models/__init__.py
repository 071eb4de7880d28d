"""Denoising networks. Every model is called as model(x_t, t, y=None) -> prediction of x_t's shape;
a text-conditional U-Net (model.context_dim > 0) also takes context= (ddpmlab.text.TextContext)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import Config
from ..errors import ConfigError
from .mlp import MLP, MLPConfig
from .tutorial import SimpleUnet, TinyCNN
from .unet import UNet, UNetConfig, check_image_size

__all__ = ["ARCHS", "MLP", "MLPConfig", "SimpleUnet", "TinyCNN", "UNet", "UNetConfig", "build_model", "count_parameters"]


def build_model(cfg: Config, item_shape: tuple[int, ...]) -> nn.Module:
    """The network cfg.model describes, for data items of item_shape: (C, H, W) or (D,)."""
    m = cfg.model
    is_image = len(item_shape) == 3
    if (m.arch == "mlp") == is_image:
        kind = "images" if is_image else "2D points"
        raise ConfigError(f"model.arch={m.arch} does not fit {kind}; use {'unet' if is_image else 'mlp'}")
    if m.arch != "mlp" and item_shape[1] != item_shape[2]:
        raise ConfigError(f"images must be square, got {item_shape[1]}x{item_shape[2]}; set data.image_size")
    if m.num_classes and m.arch in ("tinycnn", "simpleunet"):
        raise ConfigError(f"model.arch={m.arch} takes no class labels; use arch=unet for model.num_classes > 0")
    if m.context_dim and m.arch != "unet":
        raise ConfigError(f"model.arch={m.arch} takes no text context; use arch=unet for model.context_dim > 0")
    try:
        return ARCHS[m.arch](cfg, item_shape)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _mlp(cfg: Config, item_shape: tuple[int, ...]) -> nn.Module:
    m = cfg.model
    return MLP(MLPConfig(item_shape[0], m.hidden, m.depth, num_classes=m.num_classes))


def _tinycnn(cfg: Config, item_shape: tuple[int, ...]) -> nn.Module:
    return TinyCNN(item_shape[0], cfg.model.channels, cfg.diffusion.T)


def _simpleunet(cfg: Config, item_shape: tuple[int, ...]) -> nn.Module:
    m = cfg.model
    check_image_size(item_shape[1], len(m.channel_mults))
    return SimpleUnet(item_shape[0], tuple(m.channels * k for k in m.channel_mults))


def _unet(cfg: Config, item_shape: tuple[int, ...]) -> nn.Module:
    m = cfg.model
    return UNet(UNetConfig(in_channels=item_shape[0], image_size=item_shape[1], channels=m.channels,
                           channel_mults=m.channel_mults, num_res_blocks=m.num_res_blocks,
                           attention_resolutions=m.attention_resolutions, heads=m.heads, dropout=m.dropout,
                           num_classes=m.num_classes, context_dim=m.context_dim))


# model.arch -> builder(cfg, item_shape): the only dispatch on the architecture name
ARCHS: dict[str, Callable[[Config, tuple[int, ...]], nn.Module]] = {
    "mlp": _mlp,
    "tinycnn": _tinycnn,
    "simpleunet": _simpleunet,
    "unet": _unet,
}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

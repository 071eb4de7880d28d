"""A small MLP denoiser for 2D toy data (the lecture notes' make_moons model, with sinusoidal time features).

Shapes: x (B, D) -> (B, D); t (B,); y (B,) class labels or None.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import sinusoidal_embedding


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 2
    hidden: int = 128
    depth: int = 3
    time_dim: int = 32
    num_classes: int = 0  # > 0 adds a label embedding with one extra "null" class


class MLP(nn.Module):
    """[x, sin/cos(t), label] -> depth hidden layers of SiLU -> eps (or x0 / v) of the same dimension."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.label = nn.Embedding(cfg.num_classes + 1, cfg.time_dim) if cfg.num_classes > 0 else None
        layers: list[nn.Module] = []
        width = cfg.dim + cfg.time_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.hidden), nn.SiLU()]
            width = cfg.hidden
        layers.append(nn.Linear(width, cfg.dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        feats = sinusoidal_embedding(t, self.cfg.time_dim)
        if self.label is not None:
            if y is None:
                y = torch.full_like(t, self.cfg.num_classes, dtype=torch.long)
            feats = feats + self.label(y.long())
        return self.net(torch.cat([x, feats.to(x.dtype)], dim=1))

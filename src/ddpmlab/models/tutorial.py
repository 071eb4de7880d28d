"""The small networks of two tutorials, kept so presets can reproduce them.

TinyCNN: the T = 30 MNIST tutorial's three 3x3 convolutions with a scalar time MLP.
SimpleUnet: the T = 200 MNIST-at-32px tutorial's five-level U-Net with BatchNorm and
sinusoidal time embedding (64 -> 1024 channels, about 62M parameters).
Shapes: x (B, C, H, W) -> (B, C, H, W); t (B,). Neither takes class labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import sinusoidal_embedding


class TinyCNN(nn.Module):
    """conv-relu, + time features, conv-relu, conv. Time enters as t / T (the tutorial used t / 1000)."""

    def __init__(self, channels: int = 1, hidden: int = 64, T: int = 30):
        super().__init__()
        self.T = T
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.conv3 = nn.Conv2d(hidden, channels, 3, padding=1)
        self.time_mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t_emb = self.time_mlp(t.float().view(-1, 1) / self.T).to(x.dtype)[:, :, None, None]
        h = F.relu(self.conv1(x)) + t_emb
        return self.conv3(F.relu(self.conv2(h)))


class _Block(nn.Module):
    """conv-relu-BN, + time, conv-relu-BN, then a stride-2 conv (down) or transposed conv (up)."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, up: bool):
        super().__init__()
        self.time_mlp = nn.Linear(time_dim, out_ch)
        self.conv1 = nn.Conv2d(2 * in_ch if up else in_ch, out_ch, 3, padding=1)
        self.transform = nn.ConvTranspose2d(out_ch, out_ch, 4, 2, 1) if up else nn.Conv2d(out_ch, out_ch, 4, 2, 1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(out_ch), nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.bn1(F.relu(self.conv1(x)))
        h = h + F.relu(self.time_mlp(t_emb))[:, :, None, None]
        h = self.bn2(F.relu(self.conv2(h)))
        return self.transform(h)


class SimpleUnet(nn.Module):
    """The tutorial's SimpleUnet; needs an image size divisible by 16."""

    def __init__(self, channels: int = 1, widths: tuple[int, ...] = (64, 128, 256, 512, 1024), time_dim: int = 32):
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.ReLU())
        self.conv0 = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.downs = nn.ModuleList(_Block(widths[i], widths[i + 1], time_dim, up=False) for i in range(len(widths) - 1))
        rev = widths[::-1]
        self.ups = nn.ModuleList(_Block(rev[i], rev[i + 1], time_dim, up=True) for i in range(len(rev) - 1))
        self.output = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t_emb = self.time_mlp(sinusoidal_embedding(t, self.time_dim))
        x = self.conv0(x)
        skips = []
        for down in self.downs:
            x = down(x, t_emb)
            skips.append(x)
        for up in self.ups:
            x = up(torch.cat([x, skips.pop()], dim=1), t_emb)
        return self.output(x)

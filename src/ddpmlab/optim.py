"""What updates the weights: AdamW (fused), the learning-rate schedule, and the EMA of the weights."""

from __future__ import annotations

import math

import torch

from .config import Config, TrainConfig


def lr_at(cfg: Config, step: int) -> float:
    """Linear warmup to train.lr, then constant or cosine decay to lr * min_lr_ratio."""
    tc = cfg.train
    if tc.warmup and step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    if tc.lr_schedule == "cosine":
        progress = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
        return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return tc.lr


def make_optimizer(model: torch.nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where torch has one: one pass over all parameters, 2.6x faster than the
    per-tensor loop on CPU (benchmarks/RESULTS.md)."""
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                             fused=True if device.type in ("cpu", "cuda") else None)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters; buffers (BatchNorm) are copied."""
    ema_p, model_p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, model_p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def ema_decay_at(tc: TrainConfig, updates: int) -> float:
    """train.ema_decay, warmed up as min(decay, (1 + n) / (10 + n)) after n updates when train.ema_warmup."""
    return min(tc.ema_decay, (1 + updates) / (10 + updates)) if tc.ema_warmup else tc.ema_decay

"""Drive a sampler over many samples in batches, with per-sample seeds."""

from __future__ import annotations

from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..diffusion import Denoiser, make_denoiser
from ..schedules import Schedule, Spacing, spaced_timesteps
from .common import Callback


def sample_generators(seed: int, indices: range, device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample index: sample i always gets the same noise for a given seed."""
    return [torch.Generator(device=device).manual_seed(seed * 1_000_003 + i) for i in indices]


def generate(
    denoiser_for: Callable[[slice], Denoiser],
    sampler: Callable[..., torch.Tensor],
    schedule: Schedule,
    item_shape: tuple[int, ...],
    n: int,
    *,
    steps: int,
    spacing: Spacing = "trailing",
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
    progress: bool = False,
    options: dict[str, Any] | None = None,
) -> torch.Tensor:
    """n samples (n, *item_shape) on the CPU; denoiser_for(slice) builds the denoiser for samples [slice].

    The callback (for trajectories) only sees the first batch.
    """
    timesteps = spaced_timesteps(schedule, steps, spacing)
    out = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="sampling", unit="batch", disable=not progress or len(starts) < 2):
        idx = range(start, min(n, start + batch_size))
        gens = sample_generators(seed, idx, device)
        x_T = torch.stack([torch.randn(item_shape, generator=g, device=device) for g in gens])
        x0 = sampler(
            denoiser_for(slice(idx.start, idx.stop)), x_T, schedule, timesteps,
            generator=gens, callback=callback if start == 0 else None, **(options or {}),
        )
        out.append(x0.float().cpu())
    return torch.cat(out)


def sample_from_config(
    cfg,
    model: torch.nn.Module,
    schedule: Schedule,
    item_shape: tuple[int, ...],
    n: int,
    device: torch.device | str,
    *,
    callback: Callback | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """n samples from a network with a run config's sampler settings (cfg.sample, cfg.diffusion).

    Conditional models get labels 0, 1, ..., K-1, 0, 1, ... in order.
    """
    from . import get_sampler

    s = cfg.sample
    labels = torch.arange(n, device=device) % cfg.model.num_classes if cfg.model.num_classes else None
    clip = 1.0 if s.clip and len(item_shape) == 3 else None

    def denoiser(sl: slice) -> Denoiser:
        y = None if labels is None else labels[sl]
        return make_denoiser(model, schedule, cfg.diffusion.prediction, y=y, clip=clip)

    options = {"variance": s.variance} if s.sampler == "ddpm" else {}
    return generate(denoiser, get_sampler(s.sampler), schedule, item_shape, n, steps=s.steps, spacing=s.spacing,
                    seed=s.seed, batch_size=batch_size or s.batch_size, device=device, callback=callback,
                    progress=progress, options=options)

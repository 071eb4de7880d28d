"""What every sampler shares: the walk over its timesteps, per-sample noise and the callback type."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence, Union

import torch

Generators = Union[torch.Generator, Sequence[torch.Generator], None]
# callback(step_index, t, x_t, x0_hat): after each step, the state x_t it produced (t = 0 last)
# and the x0 estimate the step was based on.
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like x: (B, ...).

    A list of B generators draws each sample's noise from its own generator, so an image
    depends only on its seed, never on the batch it was drawn in.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=x.device) for g in generator])


def batched_t(t: int, x: torch.Tensor) -> torch.Tensor:
    """The scalar timestep t repeated for the batch: (B,) long."""
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def step_pairs(timesteps: torch.Tensor | Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """(i, t, s) for each step i from t to s < t along decreasing timesteps; s = 0 after the last one."""
    ts = [int(t) for t in timesteps]
    for i, t in enumerate(ts):
        yield i, t, ts[i + 1] if i + 1 < len(ts) else 0

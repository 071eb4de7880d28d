"""The forward process q(x_t | x_0) for one picture, as `ddpmlab forward` draws it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError

SCHEDULE_NAMES = ("linear", "cosine", "sigmoid", "geometric")


@dataclass(frozen=True)
class Forward:
    """q(x_t | x_0) for one picture: x_t at the chosen t, a strip over t, and the numbers at t."""

    x_t: np.ndarray  # (H, W, C) uint8
    strip: np.ndarray
    strip_ts: tuple[int, ...]
    alpha_bar: float
    log_snr: float
    curve: tuple[np.ndarray, np.ndarray]  # t = 1..T and log-SNR(t)


def forward(x0, schedule: str, T: int, t: int, seed: int = 0) -> Forward:
    """x_t = alpha_t x_0 + sigma_t eps with one eps (from seed) for every t, as `ddpmlab forward` draws it."""
    import torch

    from ...diffusion import q_sample
    from ...schedules import make_schedule
    from ...viz import grid_image

    if not 1 <= T <= 10_000:
        raise ConfigError(f"T must be between 1 and 10000, got {T}")
    if not 0 <= t <= T:
        raise ConfigError(f"t must lie in [0, T={T}], got {t}")
    try:
        sched = make_schedule(schedule, T)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    ts = tuple(sorted({round(k * T / 7) for k in range(8)}))
    times = torch.tensor([t, *ts])
    xs = q_sample(sched, x0.expand(len(times), *x0.shape[1:]), times, eps.expand(len(times), *x0.shape[1:]))
    lam = sched.log_snr
    return Forward(grid_image(xs[:1], nrow=1, padding=0), grid_image(xs[1:], nrow=len(ts)), ts,
                   float(sched.alpha_bar[t]), float(lam[t]),
                   (np.arange(1, T + 1), lam[1:].numpy()))

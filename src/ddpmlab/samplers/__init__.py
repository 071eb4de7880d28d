"""Samplers: stateless functions sharing one signature,
sampler(denoise, x_T, schedule, timesteps, *, generator=None, callback=None, **options) -> x_0.

SAMPLERS is the only name -> function dispatch.
"""

from __future__ import annotations

from typing import Callable

from .common import Callback, Generators, randn_like
from .ddpm import sample_ddpm

SAMPLERS: dict[str, Callable[..., object]] = {
    "ddpm": sample_ddpm,
}

__all__ = ["SAMPLERS", "Callback", "Generators", "get_sampler", "randn_like", "sample_ddpm"]


def get_sampler(name: str) -> Callable[..., object]:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]

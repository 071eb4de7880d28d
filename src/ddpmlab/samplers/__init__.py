"""Samplers: stateless functions sharing one signature,
sampler(denoise, x_T, schedule, timesteps, *, generator=None, callback=None, **options) -> x_0.

SAMPLERS is the only name -> function dispatch.
"""

from __future__ import annotations

from typing import Callable

from ..schedules import Spacing
from .common import Callback, Generators, randn_like
from .ddim import ddim_invert, sample_ddim
from .ddpm import sample_ddpm
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_3m
from .karras import sample_euler, sample_heun

SAMPLERS: dict[str, Callable[..., object]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-3m": sample_dpmpp_3m,
    "euler": sample_euler,
    "heun": sample_heun,
}

# The timestep spacing each sampler runs with under sample.spacing = "auto". "trailing" starts at
# t = T, so the first step sees pure noise, as x_T ~ N(0, I) assumes (Lin et al. 2024, Sec. 3.3 and
# Table 2); the ancestral sampler re-injects noise every step and is at home there. "karras" places
# the steps at the noise levels of Karras et al. 2022, eq. 5 (its first step is also t = T), which is
# what Algorithms 1 and 2 were designed for, and it ends at t = 1: the deterministic ODE samplers'
# last, first-order jump from t = T/steps to 0 under trailing spacing shrinks every mode (measured on
# the Gaussian-mixture oracle: variance ratio 0.52 for dpmpp-2m at 20 steps, 0.84 for ddim at 50;
# about 1.0 for all of them with karras spacing).
DEFAULT_SPACING: dict[str, Spacing] = {
    "ddpm": "trailing",
    "ddim": "karras",
    "dpmpp-2m": "karras",
    "dpmpp-3m": "karras",
    "euler": "karras",
    "heun": "karras",
}


def resolve_spacing(sampler: str, spacing: str) -> Spacing:
    """sample.spacing, with "auto" replaced by the sampler's default."""
    return DEFAULT_SPACING.get(sampler, "trailing") if spacing == "auto" else spacing  # type: ignore[return-value]

__all__ = [
    "DEFAULT_SPACING",
    "SAMPLERS",
    "Callback",
    "Generators",
    "ddim_invert",
    "get_sampler",
    "randn_like",
    "resolve_spacing",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_3m",
    "sample_euler",
    "sample_heun",
]


def get_sampler(name: str) -> Callable[..., object]:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]

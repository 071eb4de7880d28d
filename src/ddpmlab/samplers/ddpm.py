"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2), on any decreasing subset of timesteps.

Notation: alpha_bar_t as in schedules.py; for consecutive sampler steps t > s,
beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s (Nichol & Dhariwal 2021, Sec. 4 respacing).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..diffusion import Denoiser, q_posterior
from ..schedules import Schedule
from .common import Callback, Generators, batched_t, randn_like, step_pairs


@torch.no_grad()
def sample_ddpm(denoise: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor, *,
                variance: Literal["beta", "posterior"] = "posterior", generator: Generators = None,
                callback: Callback | None = None) -> torch.Tensor:
    """Ho et al. 2020, Alg. 2: x_s ~ N(mu_tilde(x_t, x0_hat), sigma^2 I), sigma^2 = beta_{t|s} or beta-tilde.

    x_T: (B, ...) pure noise; timesteps: decreasing ints in [1, T]. Returns x_0: (B, ...).
    The mean is written through the predicted x0 (Ho eq. 7), which equals eq. 11's eps form.
    """
    x = x_T
    for i, t, s in step_pairs(timesteps):
        tt, ss = batched_t(t, x), batched_t(s, x)
        x0_hat, _ = denoise(x, tt)
        mean, post_var = q_posterior(schedule, x0_hat, x, tt, ss)
        if s > 0:
            if variance == "beta":
                var = 1.0 - schedule.at(schedule.alpha_bar, tt, x) / schedule.at(schedule.alpha_bar, ss, x)
            else:
                var = post_var
            x = mean + var.sqrt() * randn_like(x, generator)
        else:
            x = mean  # Alg. 2, line 4: no noise is added on the last step
        if callback is not None:
            callback(i, s, x, x0_hat)
    return x

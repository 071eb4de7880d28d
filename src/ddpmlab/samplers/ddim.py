"""DDIM sampling (Song et al. 2021, eq. 12) and deterministic DDIM inversion.

Notation (Song et al. 2021 write alpha for our alpha_bar): for consecutive sampler steps t > s,
    x0_hat, eps_hat   the denoiser's estimates at (x_t, t)
    sigma_eta         eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)   (eq. 16)
    x_s = alpha_s x0_hat + sqrt(1 - alpha_bar_s - sigma_eta^2) eps_hat + sigma_eta z,  z ~ N(0, I)  (eq. 12)
eta = 0 is the deterministic DDIM; eta = 1 makes sigma_eta^2 the posterior variance beta-tilde, i.e. DDPM.
"""

from __future__ import annotations

import torch

from ..diffusion import Denoiser
from ..schedules import Schedule
from .common import Callback, Generators, batched_t, randn_like, step_pairs


@torch.no_grad()
def sample_ddim(denoise: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor, *,
                eta: float = 0.0, generator: Generators = None, callback: Callback | None = None) -> torch.Tensor:
    """Song et al. 2021, eq. 12 (with eq. 16's sigma scaled by eta) on decreasing timesteps.

    x_T: (B, ...) pure noise; timesteps: decreasing ints in [1, T]. Returns x_0: (B, ...).
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x = x_T
    for i, t, s in step_pairs(timesteps):
        tt, ss = batched_t(t, x), batched_t(s, x)
        x0_hat, eps_hat = denoise(x, tt)
        ab_t, ab_s = schedule.at(schedule.alpha_bar, tt, x), schedule.at(schedule.alpha_bar, ss, x)
        var = eta**2 * (1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s)  # sigma_eta^2, eq. 16; 0 at s = 0
        x = ab_s.sqrt() * x0_hat + (1.0 - ab_s - var).clamp_min(0.0).sqrt() * eps_hat
        if s > 0 and eta > 0:
            x = x + var.sqrt() * randn_like(x, generator)
        if callback is not None:
            callback(i, s, x, x0_hat)
    return x


@torch.no_grad()
def ddim_invert(
    denoise: Denoiser,
    x0: torch.Tensor,
    schedule: Schedule,
    timesteps: torch.Tensor,
    *,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Song et al. 2021, Sec. 4.3: eq. 13 (eta = 0, an Euler step of the ODE eq. 14) run from t = 0 up to timesteps[0].

    x0: (B, ...) data; timesteps: the decreasing ints a decoding run would use, traversed in
    increasing order. Returns x_T: (B, ...) such that sample_ddim(..., timesteps) maps it back
    to about x0. Each step s -> t moves x_s along the estimates at (x_s, s):
        x_t = alpha_t x0_hat(x_s, s) + sigma_t eps_hat(x_s, s).
    The first step starts at s = 0, where the network is undefined; there x0 is known exactly,
    and eps is estimated at the point the step reaches to first order, (alpha_{t_1} x0, t_1):
        x_{t_1} = alpha_{t_1} x0 + sigma_{t_1} eps_hat(alpha_{t_1} x0, t_1).
    callback(i, t, x_t, x0_hat) sees each state on the way up.
    """
    x = x0
    ts = [int(t) for t in timesteps.flip(0)]
    for i, t in enumerate(ts):
        s = ts[i - 1] if i > 0 else 0
        tt, ss = batched_t(t, x), batched_t(s, x)
        alpha_t = schedule.at(schedule.alpha, tt, x)
        if s > 0:
            x0_hat, eps_hat = denoise(x, ss)
        else:
            x0_hat, eps_hat = x0, denoise(alpha_t * x0, tt).eps
        x = alpha_t * x0_hat + schedule.at(schedule.sigma, tt, x) * eps_hat
        if callback is not None:
            callback(i, t, x, x0_hat)
    return x

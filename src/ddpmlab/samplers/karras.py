"""Euler and Heun samplers of Karras et al. 2022 (EDM), Alg. 1 and Alg. 2, on a discrete-time model.

Notation (Karras et al. 2022): the variance-exploding variable and noise level
    x     x_t / alpha_t                        sigma   sigma_t / alpha_t   (0 at t = 0)
    D(x; sigma)   the denoiser's x0 estimate at (alpha_t x, t)
    d     (x - D(x; sigma)) / sigma = eps_hat, the slope dx/dsigma of the probability-flow ODE (eq. 4)
The network exists only at integer t, so every noise level is some t's sigma: the sampler's own
timesteps, then sigma = 0 at the end; Heun's churned level sigma_hat is rounded to the nearest
t >= t_i. States go to callbacks on the x_t scale, x_t = alpha_t x, like every other sampler.
"""

from __future__ import annotations

import math

import torch

from ..diffusion import Denoised, Denoiser
from ..schedules import Schedule
from .common import Callback, Generators, batched_t, randn_like, step_pairs


# Above this noise level Heun takes a plain Euler step. EDM's levels stop at sigma = 80; a cosine schedule starts at
# sigma_T ~ 2e4, and a correction across that step multiplies the slope's O(1) change by the step's 2e4 (measured
# on the oracle mixtures: 1e3-1e4 times the error of the best spacing). Euler is exact there up to O(1 / sigma),
# since x / sigma is almost pure noise. The linear schedule's sigma_T = 157 keeps the correction.
HEUN_SIGMA_MAX = 1e3


def heun_evaluations(schedule: Schedule, timesteps: torch.Tensor, s_churn: float = 0.0) -> int:
    """Network evaluations of sample_heun: two a step, one on the last and on a step from above HEUN_SIGMA_MAX.

    Exact without churn; churn raises the levels and can only remove corrections, never add any.
    """
    sig = _ve_sigma(schedule).tolist()
    ts = [int(t) for t in timesteps]
    return len(ts) + sum(1 for t in ts[:-1] if sig[t] <= HEUN_SIGMA_MAX)


def _ve_sigma(schedule: Schedule) -> torch.Tensor:
    """(T + 1,) sigma_t / alpha_t, float64; 0 at t = 0."""
    return schedule.sigma / schedule.alpha


def _denoise_ve(denoise: Denoiser, schedule: Schedule, x: torch.Tensor, t: int) -> Denoised:
    """The denoiser evaluated at the VE state x: (B, ...) with noise level sigma_t / alpha_t."""
    tt = batched_t(t, x)
    return denoise(schedule.at(schedule.alpha, tt, x) * x, tt)


def _to_vp(schedule: Schedule, x: torch.Tensor, t: int) -> torch.Tensor:
    return schedule.at(schedule.alpha, batched_t(t, x), x) * x


@torch.no_grad()
def sample_euler(denoise: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor, *,
                 generator: Generators = None, callback: Callback | None = None) -> torch.Tensor:
    """Karras et al. 2022, Alg. 1 (deterministic Euler): x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i.

    x_T: (B, ...) pure noise at timesteps[0]; one network evaluation per timestep. `generator`
    is accepted for the shared signature; nothing is drawn. Returns x_0: (B, ...).
    """
    sig = _ve_sigma(schedule).tolist()
    x = x_T / schedule.at(schedule.alpha, batched_t(int(timesteps[0]), x_T), x_T)
    for i, t, t_next in step_pairs(timesteps):
        x0_hat, d = _denoise_ve(denoise, schedule, x, t)
        x = x0_hat + sig[t_next] * d  # = x + (sigma_{i+1} - sigma_i) d, without cancelling two O(sigma_i) terms
        if callback is not None:
            callback(i, t_next, _to_vp(schedule, x, t_next), x0_hat)
    return x


@torch.no_grad()
def sample_heun(denoise: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor, *,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                generator: Generators = None, callback: Callback | None = None) -> torch.Tensor:
    """Karras et al. 2022, Alg. 2: Heun steps in sigma with optional churn (s_churn > 0 adds noise).

    x_T: (B, ...) pure noise at timesteps[0]; 2 len(timesteps) - 1 network evaluations (the step
    to sigma = 0 is plain Euler). Churn raises sigma_i to sigma_hat = (1 + gamma_i) sigma_i with
    gamma_i = min(s_churn / N, sqrt(2) - 1) while s_tmin <= sigma_i <= s_tmax, rounded to the
    nearest timestep (at most T). The callback's x0_hat is D(x_hat; sigma_hat), the first of the
    step's two evaluations. Returns x_0: (B, ...).
    """
    ve = _ve_sigma(schedule)
    sig = ve.tolist()
    n = len(timesteps)
    x = x_T / schedule.at(schedule.alpha, batched_t(int(timesteps[0]), x_T), x_T)
    for i, t, t_next in step_pairs(timesteps):
        t_hat = t
        gamma = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= sig[t] <= s_tmax else 0.0
        if gamma > 0:
            target = math.log(sig[t] * (1.0 + gamma))
            t_hat = t + int(torch.argmin((ve[t:].log() - target).abs()))
        if t_hat > t:
            noise = s_noise * randn_like(x, generator)
            x = x + math.sqrt(sig[t_hat] ** 2 - sig[t] ** 2) * noise
        x0_hat, d = _denoise_ve(denoise, schedule, x, t_hat)
        x_next = x + (sig[t_next] - sig[t_hat]) * d
        if t_next > 0 and sig[t_hat] <= HEUN_SIGMA_MAX:  # second-order correction, Alg. 2 lines 9-11
            _, d_next = _denoise_ve(denoise, schedule, x_next, t_next)
            x_next = x + (sig[t_next] - sig[t_hat]) * (0.5 * d + 0.5 * d_next)
        x = x_next
        if callback is not None:
            callback(i, t_next, _to_vp(schedule, x, t_next), x0_hat)
    return x

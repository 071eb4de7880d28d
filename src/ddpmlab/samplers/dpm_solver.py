"""DPM-Solver++(2M): the multistep second-order solver of Lu et al. 2022 (arXiv 2211.01095), Alg. 2.

Notation (Lu et al. 2022): for the sampler's times t_0 > t_1 > ... > t_M = 0,
    lambda_i   log(alpha_{t_i} / sigma_{t_i}), half of schedules.py's log-SNR; +inf at t = 0
    h_i        lambda_i - lambda_{i-1} > 0, the step in log-SNR time
    r_i        h_{i-1} / h_i
    x0_i       the denoiser's data prediction at (x_{t_i}, t_i)
    D_i        (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2}, the multistep estimate of x0 on the step
    x_{t_i} = (sigma_i / sigma_{i-1}) x_{t_{i-1}} - alpha_i (e^{-h_i} - 1) D_i
"""

from __future__ import annotations

import math

import torch

from ..diffusion import Denoiser
from ..schedules import Schedule
from .common import Callback, Generators, batched_t, step_pairs


@torch.no_grad()
def sample_dpmpp_2m(denoise: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor, *,
                    generator: Generators = None, callback: Callback | None = None) -> torch.Tensor:
    """Lu et al. 2022 (DPM-Solver++), Alg. 2: multistep 2nd order in lambda, first step 1st order.

    x_T: (B, ...) pure noise; timesteps: decreasing ints in [1, T], one network evaluation each.
    The last step, to t = 0 where sigma = 0 and lambda = +inf, is the first-order update in that
    limit (e^{-h} = 0, sigma_0 / sigma = 0), which returns the final x0 prediction. `generator` is
    accepted for the shared signature; the solver draws no noise.
    x_T: (B, ...) -> x_0: (B, ...).
    """
    x = x_T
    prev_x0: torch.Tensor | None = None  # x0_{i-2} in Alg. 2's indexing
    h_prev = 0.0
    for i, t, s in step_pairs(timesteps):
        tt, ss = batched_t(t, x), batched_t(s, x)
        x0_hat, _ = denoise(x, tt)
        if s == 0:
            x = x0_hat  # sigma_s = 0: x_s = alpha_0 x0_hat exactly (first order; lambda_s = +inf)
        else:
            alpha_t, sigma_t = schedule.at(schedule.alpha, tt, x), schedule.at(schedule.sigma, tt, x)
            alpha_s, sigma_s = schedule.at(schedule.alpha, ss, x), schedule.at(schedule.sigma, ss, x)
            h = torch.log(alpha_s / sigma_s) - torch.log(alpha_t / sigma_t)
            if prev_x0 is None:
                D = x0_hat  # first step: DPM-Solver++(1), i.e. DDIM
            else:
                r = h_prev / h
                D = (1.0 + 0.5 / r) * x0_hat - (0.5 / r) * prev_x0
            x = (sigma_s / sigma_t) * x - alpha_s * torch.expm1(-h) * D
            h_prev = h
        prev_x0 = x0_hat
        if callback is not None:
            callback(i, s, x, x0_hat)
    return x


@torch.no_grad()
def sample_dpmpp_3m(denoise: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor, *,
                    generator: Generators = None, callback: Callback | None = None) -> torch.Tensor:
    """Lu et al. 2022 (DPM-Solver++), App. B multistep 3rd order in lambda; orders 1, 2 on the first steps.

    With h = lambda_s - lambda_t and the last three x0 estimates m0, m1, m2 at lambda_t > lambda_1 > lambda_2,
    r0 = (lambda_t - lambda_1) / h, r1 = (lambda_1 - lambda_2) / h, the divided differences
        D1 = (m0 - m1) / r0 + r0 / (r0 + r1) ((m0 - m1) / r0 - (m1 - m2) / r1),  D2 = (...) / (r0 + r1)
    enter x_s = (sigma_s / sigma_t) x - alpha_s (phi_1 m0 - phi_2 D1 + phi_3 D2) with
    phi_1 = e^{-h} - 1, phi_2 = phi_1 / h + 1, phi_3 = (phi_1 + h) / h^2 - 1/2. The last step, to t = 0,
    returns the final x0 estimate, as in sample_dpmpp_2m. x_T: (B, ...) -> x_0: (B, ...).
    """
    lam = (0.5 * schedule.log_snr).tolist()
    alpha, sigma = schedule.alpha.tolist(), schedule.sigma.tolist()
    x = x_T
    hist: list[tuple[float, torch.Tensor]] = []  # (lambda, x0 estimate), newest last
    for i, t, s in step_pairs(timesteps):
        x0_hat, _ = denoise(x, batched_t(t, x))
        hist = [*hist[-2:], (lam[t], x0_hat)]
        if s == 0:
            x = x0_hat
        else:
            h = lam[s] - lam[t]
            phi_1 = math.expm1(-h)
            update = phi_1 * x0_hat
            if len(hist) >= 2:
                (l1, m1), r0 = hist[-2], (lam[t] - hist[-2][0]) / h
                d1_0 = (x0_hat - m1) / r0
                if len(hist) == 3:
                    (_, m2), r1 = hist[0], (l1 - hist[0][0]) / h
                    d1_1 = (m1 - m2) / r1
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    d1 = d1_0 + r0 * d2
                    update = update - (phi_1 / h + 1.0) * d1 + ((phi_1 + h) / h**2 - 0.5) * d2
                else:
                    update = update + 0.5 * phi_1 * d1_0  # second order, as DPM-Solver++(2M)
            x = (sigma[s] / sigma[t]) * x - alpha[s] * update
        if callback is not None:
            callback(i, s, x, x0_hat)
    return x

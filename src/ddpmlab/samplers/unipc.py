"""UniPC: the unified predictor-corrector of Zhao et al. 2023 (arXiv 2302.04867), multistep, on the x0 prediction.

Notation (Zhao et al. 2023, Sec. 3; as in dpm_solver.py): for a step from t to s < t,
    lambda      log(alpha / sigma), half of schedules.py's log-SNR; +inf at t = 0
    h           lambda_s - lambda_t > 0, and z = -h (the exponential integrator of the x0 form runs in -lambda)
    m_0         the x0 estimate at t; m_k the one k steps earlier, at lambda_k
    r_k         (lambda_k - lambda_t) / h < 0; r = 1 for the estimate at s itself (the corrector's)
    D_k         (m_k - m_0) / r_k, which is sum_n r_k^(n-1) h^n / n! x0^(n) to leading orders
    phi_n(z)    phi_1 = (e^z - 1) / z, phi_{n+1} = (phi_n - 1/n!) / z, the exponential integrator's functions
    B(h)        e^z - 1 ("bh2", the default) or z ("bh1"): any B = O(h) gives the same order, it scales the a_k
The exact solution x_s = (sigma_s / sigma_t) x_t + alpha_s sum_n h^(n+1) phi_{n+1}(z) x0^(n) is matched by
    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^z - 1) m_0 - alpha_s B(h) sum_k a_k D_k
when the a_k solve sum_k a_k r_k^(n-1) = n! z phi_{n+1}(z) / B(h) for n = 1..K (K the number of D_k).
UniP-p (Alg. 2) uses the p - 1 earlier estimates: order p. UniC-p (Alg. 1) adds D = m_s - m_0 from the estimate
at s of the predicted x_s, and corrects x_s to order p + 1 with no new evaluation: m_s is kept as it is for the next
steps, the corrected x_s is where the next predictor starts. Both take a = 1/2 where there is a single coefficient
(UniP-2, UniC-1), the h -> 0 limit of the condition, as the paper's code does. Orders grow from 1 over the first
steps and fall to 1 on the last (to t = 0, where sigma_0 = 0 and the step returns the final x0 estimate, as
DPM-Solver++ does), so the corrector is skipped there: it could not change that estimate.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..diffusion import Denoiser
from ..schedules import Schedule
from .common import Callback, Generators, batched_t, step_pairs

Variant = Literal["bh1", "bh2"]


def unipc_coefficients(rs: list[float], h: float, variant: Variant = "bh2") -> tuple[float, float, list[float]]:
    """(e^z - 1, B(h), a_k) for the step h > 0 with ratios r_k (the predictor's r_k < 0; the corrector's end in 1)."""
    z = -h
    phi_1z = math.expm1(z)  # z phi_1(z)
    B = phi_1z if variant == "bh2" else z
    if len(rs) == 1:
        return phi_1z, B, [0.5]
    g, zphi, fact = [], phi_1z / z - 1.0, 1.0  # zphi = z phi_{n+1}(z), from n = 1
    for n in range(1, len(rs) + 1):
        fact *= n
        g.append(zphi * fact / B)
        zphi = zphi / z - 1.0 / (fact * (n + 1))
    R = torch.tensor([[r ** (n - 1) for r in rs] for n in range(1, len(rs) + 1)], dtype=torch.float64)
    a = torch.linalg.solve(R, torch.tensor(g, dtype=torch.float64))
    return phi_1z, B, a.tolist()


def _unipc_step(x: torch.Tensor, lam_t: float, lam_s: float, ratio: float, alpha_s: float, m0: torch.Tensor,
                earlier: list[tuple[float, torch.Tensor]], m_s: torch.Tensor | None, variant: Variant) -> torch.Tensor:
    """x_s from x at lambda_t with estimate m0 and `earlier` ones (newest first): UniP, or UniC given m_s.

    ratio = sigma_s / sigma_t. x: (B, ...) -> (B, ...).
    """
    h = lam_s - lam_t
    rs = [(lk - lam_t) / h for lk, _ in earlier]
    Ds = [(mk - m0) / rk for rk, (_, mk) in zip(rs, earlier)]
    if m_s is not None:
        rs, Ds = [*rs, 1.0], [*Ds, m_s - m0]
    phi_1z = math.expm1(-h)
    update = phi_1z * m0
    if rs:
        _, B, a = unipc_coefficients(rs, h, variant)
        update = update + B * sum(ak * Dk for ak, Dk in zip(a, Ds))
    return ratio * x - alpha_s * update


@torch.no_grad()
def sample_unipc(denoise: Denoiser, x_T: torch.Tensor, schedule: Schedule, timesteps: torch.Tensor, *,
                 generator: Generators = None, callback: Callback | None = None, order: int = 3,
                 variant: Variant = "bh2") -> torch.Tensor:
    """Zhao et al. 2023 (UniPC), Alg. 1-2: multistep UniP-p with the corrector UniC-p on the x0 prediction.

    x_T: (B, ...) pure noise; timesteps: decreasing ints in [1, T], one network evaluation each; order 1, 2 or 3
    (1 is DDIM corrected to second order); variant: B(h). The callback sees each predicted state x_s, the one the
    network is evaluated at next (its corrected value is where the following step starts). `generator` is
    accepted for the shared signature; the solver draws no noise. x_T: (B, ...) -> x_0: (B, ...).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r}")
    lam = (0.5 * schedule.log_snr).tolist()
    alpha, sigma = schedule.alpha.tolist(), schedule.sigma.tolist()
    ts = [int(t) for t in timesteps]
    x = x_T
    hist: list[tuple[float, torch.Tensor]] = []  # (lambda, x0 estimate), newest first
    last: tuple[int, torch.Tensor, int] | None = None  # the last predictor's (t, starting state, order)
    for i, t, s in step_pairs(ts):
        x0_hat, _ = denoise(x, batched_t(t, x))
        if last is not None and s != 0:  # UniC-p: correct the x at t that UniP-p made from x_prev at t_prev
            t_prev, x_prev, p = last
            x = _unipc_step(x_prev, lam[t_prev], lam[t], sigma[t] / sigma[t_prev], alpha[t], hist[0][1],
                            hist[1:p], x0_hat, variant)
        hist = [(lam[t], x0_hat), *hist][:order]
        p = min(order, len(ts) - i, len(hist))  # warm-up, and the lower orders at the end
        last = (t, x, p)
        if s == 0:
            x = x0_hat  # sigma_s = 0: x_s = alpha_0 x0_hat exactly (lambda_s = +inf)
        else:  # UniP-p from t to s
            x = _unipc_step(x, lam[t], lam[s], sigma[s] / sigma[t], alpha[s], x0_hat, hist[1:p], None, variant)
        if callback is not None:
            callback(i, s, x, x0_hat)
    return x

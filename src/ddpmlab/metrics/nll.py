"""Negative log-likelihood in bits/dim from the variational bound of Ho et al. 2020, eq. 5.

Notation (schedules.py, diffusion.py; Ho et al. 2020):
    x0 in [-1, 1]^D on the 256-level grid k / 127.5 - 1; x_t ~ q(x_t | x0) = N(alpha_t x0, sigma_t^2 I)
    q(x_{t-1} | x_t, x0)  = N(mu_tilde(x_t, x0), beta_tilde_t I)                          (eqs. 6-7)
    p(x_{t-1} | x_t)      = N(mu_tilde(x_t, x0_hat(x_t, t)), s_t^2 I), s_t^2 = beta_tilde_t ("posterior")
                            or beta_t ("beta"): the model's mean goes through its x0 estimate (Sec. 3.2)
    L_T     = KL(q(x_T | x0) || N(0, I))
    L_{t-1} = E_q KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)),   t = 2..T
    L_0     = -log p(x0 | x_1), the discretized Gaussian decoder of Sec. 3.3 with mean x0_hat(x_1, 1) and
              variance beta_tilde_2 ("posterior": beta_tilde_1 = 0, so Ho et al.'s code clips it) or beta_1
    bits/dim = (L_T + sum_{t>1} L_{t-1} + L_0) / (D ln 2), per image

Every expectation over x_t is estimated with one draw of eps per image and term. `timesteps=None`
evaluates every t = 2..T (exact in t). `timesteps=K` is a stratified estimator: {2, ..., T} is cut into K
contiguous strata S_k, each image draws one t uniformly from every stratum and the sum is estimated by
sum_k |S_k| L_{t_k - 1}: unbiased, with K instead of T - 1 network evaluations per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..diffusion import Denoiser, q_posterior
from ..schedules import Schedule

Variance = Literal["posterior", "beta"]
BIN = 1.0 / 255.0  # half the width of one of the 256 bins of [-1, 1]


@dataclass(frozen=True)
class NLLResult:
    """Per-image terms in bits/dim, each (N,): bpd = prior + diffusion + decoder."""

    bpd: torch.Tensor
    prior: torch.Tensor  # L_T
    diffusion: torch.Tensor  # sum_{t=2}^T L_{t-1}
    decoder: torch.Tensor  # L_0
    evaluations: int  # network evaluations per image
    estimator: str

    def summary(self) -> dict[str, float | int | str]:
        n = len(self.bpd)
        se = float(self.bpd.std() / math.sqrt(n)) if n > 1 else float("nan")
        return {"bits_per_dim": float(self.bpd.mean()), "stderr": se, "n": n,
                "prior_L_T": float(self.prior.mean()), "diffusion_sum_L_t": float(self.diffusion.mean()),
                "decoder_L_0": float(self.decoder.mean()), "evaluations_per_image": self.evaluations,
                "estimator": self.estimator}


def quantize(x0: torch.Tensor) -> torch.Tensor:
    """Snap x0 in [-1, 1] to the 256-level grid k / 127.5 - 1 (what 8-bit images are)."""
    return ((x0.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def gaussian_kl(mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_q, var_q I) || N(mean_p, var_p I)) summed over all but the batch dimension; (B,) nats."""
    d = mean_q[0].numel()
    quad = (mean_q - mean_p).pow(2).flatten(1).sum(1) / var_p.flatten()
    return 0.5 * (d * (torch.log(var_p / var_q) + var_q / var_p - 1.0).flatten() + quad)


def _log_bin_mass(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Phi(hi) - Phi(lo)) for standardised edges lo < hi, stable in both tails (log_ndtr, mirrored)."""
    mirror = lo > 0  # both edges in the upper tail: use Phi(-lo) - Phi(-hi) instead
    a = torch.where(mirror, -hi, lo)
    b = torch.where(mirror, -lo, hi)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp((log_a - log_b).clamp(max=0.0)).clamp(max=1.0 - 1e-16))


def discretized_gaussian_nll(x0: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Ho et al. 2020, eq. 13: -log of the mass N(mean, var) gives x0's bin, summed per image; (B,) nats.

    Bins are [x - 1/255, x + 1/255], except the outermost, which extend to -inf (x = -1) and +inf (x = 1).
    """
    std = var.sqrt()
    lo = torch.where(x0 < -0.999, torch.full_like(x0, -math.inf), (x0 - BIN - mean) / std)
    hi = torch.where(x0 > 0.999, torch.full_like(x0, math.inf), (x0 + BIN - mean) / std)
    return -_log_bin_mass(lo, hi).flatten(1).sum(1)


def model_variance(schedule: Schedule, variance: Variance) -> torch.Tensor:
    """(T + 1,) float64 s_t^2 of p(x_{t-1} | x_t); entry 1 is the decoder's variance (see the module notes)."""
    ab = schedule.alpha_bar
    betas = schedule.betas
    post = torch.zeros_like(betas)
    post[1:] = betas[1:] * (1 - ab[:-1]) / (1 - ab[1:])
    var = post.clone() if variance == "posterior" else betas.clone()
    if variance == "posterior":
        var[1] = post[2] if schedule.T > 1 else betas[1]
    return var


def _strata(T: int, k: int | None) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering t = 2..T: T - 1 singletons when k is None, else k near-equal blocks."""
    if k is None or k >= T - 1:
        return [(t, t + 1) for t in range(2, T + 1)]
    bounds = torch.linspace(2, T + 1, k + 1).round().long().tolist()
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


@torch.no_grad()
def nll_bits_per_dim(denoise: Denoiser, schedule: Schedule, x0: torch.Tensor, *, variance: Variance = "posterior",
                     timesteps: int | None = None, generator: torch.Generator | None = None, batch_size: int = 250,
                     progress: bool = False) -> NLLResult:
    """The bound of Ho et al. 2020, eq. 5, per image in bits/dim, for data x0: (N, ...) in [-1, 1].

    denoise(x_t, t) -> (x0_hat, eps_hat) is called in x0's dtype; all bound arithmetic is float64.
    timesteps: None for every t (T network evaluations per image), K for the stratified estimator (K + 1).
    """
    T = schedule.T
    strata = _strata(T, timesteps)
    var_p = model_variance(schedule, variance)
    dims = x0[0].numel()
    parts: dict[str, list[torch.Tensor]] = {"prior": [], "diffusion": [], "decoder": []}
    batches = x0.split(batch_size)
    bar = tqdm(total=len(batches) * (len(strata) + 1), desc="nll", disable=not progress)
    for xb in batches:
        x = quantize(xb.to(torch.float64))
        B, dtype = len(x), xb.dtype

        def draw(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """x_t ~ q(x_t | x0) in float64 and the model's x0 estimate at (x_t, t)."""
            eps = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=x.device)
            x_t = schedule.at(schedule.alpha, t, x) * x + schedule.at(schedule.sigma, t, x) * eps
            return x_t, denoise(x_t.to(dtype), t).x0.to(torch.float64)

        t_T = torch.full((B,), T, dtype=torch.long)
        a_T, s_T = schedule.at(schedule.alpha, t_T, x), schedule.at(schedule.sigma, t_T, x)
        parts["prior"].append(gaussian_kl(a_T * x, s_T.pow(2), torch.zeros_like(x), torch.ones_like(s_T)))
        total = torch.zeros(B, dtype=torch.float64)
        for lo, hi in strata:
            t = torch.randint(lo, hi, (B,), generator=generator) if hi - lo > 1 else torch.full((B,), lo)
            x_t, x0_hat = draw(t)
            mean_q, var_q = q_posterior(schedule, x, x_t, t)
            mean_p, _ = q_posterior(schedule, x0_hat, x_t, t)
            total += (hi - lo) * gaussian_kl(mean_q, var_q, mean_p, schedule.at(var_p, t, x))
            bar.update()
        parts["diffusion"].append(total)
        t1 = torch.ones(B, dtype=torch.long)
        _, x0_hat = draw(t1)  # the posterior mean towards t = 0 is x0_hat itself
        parts["decoder"].append(discretized_gaussian_nll(x, x0_hat, schedule.at(var_p, t1, x)))
        bar.update()
    bar.close()
    scale = 1.0 / (dims * math.log(2.0))
    prior, diff, dec = (torch.cat(parts[k]) * scale for k in ("prior", "diffusion", "decoder"))
    estimator = "exact in t (every t = 2..T)" if len(strata) == T - 1 else \
        f"stratified over t: {len(strata)} strata of {{2..{T}}}, one t per stratum and image"
    return NLLResult(prior + diff + dec, prior, diff, dec, len(strata) + 1, estimator)

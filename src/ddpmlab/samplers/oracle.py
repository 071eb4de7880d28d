"""An exact denoiser for Gaussian-mixture data, for checking samplers without training.

energy_distance now lives in ddpmlab.metrics.toy; it is re-exported here for existing imports.

Notation (schedules.py):
    x0 ~ sum_k w_k N(mu_k, diag(s_k^2))   K axis-aligned components in D dimensions (isotropic: s_k scalar)
    q(x_t | x0) = N(alpha_t x0, sigma_t^2 I), so q(x_t | k) = N(alpha_t mu_k, diag(v_k)), v_k = alpha_t^2 s_k^2 + sigma_t^2
    r_k(x_t)    posterior responsibility p(k | x_t), proportional to w_k N(x_t; alpha_t mu_k, diag(v_k))
    E[x0 | x_t]  = sum_k r_k (mu_k + alpha_t s_k^2 / v_k (x_t - alpha_t mu_k))     (per coordinate)
    E[eps | x_t] = sum_k r_k sigma_t / v_k (x_t - alpha_t mu_k)       (so that alpha_t x0 + sigma_t eps = x_t)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..diffusion import Denoised, Denoiser
from ..metrics.toy import energy_distance
from ..schedules import Schedule

__all__ = ["GaussianMixture", "energy_distance", "oracle_denoiser"]


@dataclass(frozen=True)
class GaussianMixture:
    """means: (K, D), stds: (K,) isotropic or (K, D) per axis, weights: (K,) (normalised on use); all float64."""

    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self) -> None:
        K = self.means.shape[0]
        if self.means.dim() != 2 or self.stds.shape not in ((K,), self.means.shape) or self.weights.shape != (K,):
            raise ValueError("GaussianMixture needs means (K, D), stds (K,) or (K, D), and weights (K,)")
        object.__setattr__(self, "means", self.means.to(torch.float64))
        object.__setattr__(self, "stds", self.stds.to(torch.float64))
        object.__setattr__(self, "weights", (self.weights / self.weights.sum()).to(torch.float64))

    @classmethod
    def ring(cls, k: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
        """k equally weighted components with means on a circle in 2D."""
        angle = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
        return cls(means, torch.full((k,), std, dtype=torch.float64), torch.ones(k, dtype=torch.float64))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws: (n, D) float64."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self._stds_kd()[k] * noise

    def _stds_kd(self) -> torch.Tensor:
        """(K, D) per-axis standard deviations."""
        return self.stds[:, None].expand_as(self.means) if self.stds.dim() == 1 else self.stds

    def posterior(self, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> Denoised:
        """E[x0 | x_t] and E[eps | x_t] for x_t: (B, D) and alpha, sigma: (B, 1); float64 throughout."""
        x = x_t.to(torch.float64)
        mu, w = self.means.to(x.device), self.weights.to(x.device)
        a, s2 = alpha[:, :, None], self._stds_kd().to(x.device).pow(2)[None]  # (B, 1, 1), (1, K, D)
        v = a * a * s2 + sigma.pow(2)[:, :, None]  # (B, K, D) marginal variance per component and axis
        resid = x[:, None, :] - a * mu[None]  # (B, K, D): x_t - alpha mu_k
        log_p = w.log()[None] - 0.5 * (resid.pow(2) / v + torch.log(2 * math.pi * v)).sum(-1)  # (B, K)
        r = torch.softmax(log_p, dim=1)[..., None]  # logsumexp-normalised responsibilities
        x0 = (r * (mu[None] + a * s2 / v * resid)).sum(1)
        eps = (r * (sigma[:, :, None] / v * resid)).sum(1)
        return Denoised(x0, eps)


def oracle_denoiser(mixture: GaussianMixture, schedule: Schedule) -> Denoiser:
    """The exact Bayes denoiser E[x0 | x_t] (and matching eps) for data from `mixture`; x_t: (B, D)."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Denoised:
        like = x_t.to(torch.float64)
        alpha = schedule.at(schedule.alpha, t, like).to(x_t.device)
        sigma = schedule.at(schedule.sigma, t, like).to(x_t.device)
        x0, eps = mixture.posterior(like, alpha, sigma)
        return Denoised(x0.to(x_t.dtype), eps.to(x_t.dtype))

    return denoise

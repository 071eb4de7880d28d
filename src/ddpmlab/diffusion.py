"""The forward process, its posterior, prediction conversions and the training loss.

Notation (Ho et al. 2020; Salimans & Ho 2022):
    x0        clean data                      x_t   noised data at time t
    eps       standard normal noise           v     alpha_t eps - sigma_t x0 (velocity)
    alpha_t   sqrt(alpha_bar_t)               sigma_t  sqrt(1 - alpha_bar_t)
    snr_t     alpha_t^2 / sigma_t^2

    q(x_t | x0)          = N(alpha_t x0, sigma_t^2 I)                         (Ho eq. 4)
    q(x_{t-1} | x_t, x0) = N(mu_tilde(x_t, x0), beta_tilde_t I)              (Ho eqs. 6-7)
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple

import torch

from .schedules import Schedule

Prediction = Literal["eps", "x0", "v"]
Weighting = Literal["simple", "min-snr"]


class Denoised(NamedTuple):
    """What a sampler needs from the network at (x_t, t): the clean-data and noise estimates."""

    x0: torch.Tensor
    eps: torch.Tensor


# A denoiser maps (x_t: (B, ...), t: (B,) long) to its x0 and eps estimates.
Denoiser = Callable[[torch.Tensor, torch.Tensor], Denoised]


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Ho et al. 2020, eq. 4 in closed form: x_t = alpha_t x0 + sigma_t eps.  x0, eps: (B, ...), t: (B,)."""
    return schedule.at(schedule.alpha, t, x0) * x0 + schedule.at(schedule.sigma, t, x0) * eps


def q_posterior(
    schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_s | x_t, x0) for s < t (s = t - 1 by default: Ho et al. eqs. 6-7).

    With s < t - 1 this is the respaced posterior of Nichol & Dhariwal 2021, Sec. 4, using
    beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s in place of beta_t.
    """
    s = t - 1 if s is None else s
    ab_t = schedule.at(schedule.alpha_bar, t, x_t)
    ab_s = schedule.at(schedule.alpha_bar, s, x_t)
    beta = 1.0 - ab_t / ab_s
    mean = (ab_s.sqrt() * beta / (1.0 - ab_t)) * x0 + ((1.0 - beta).sqrt() * (1.0 - ab_s) / (1.0 - ab_t)) * x_t
    var = beta * (1.0 - ab_s) / (1.0 - ab_t)
    return mean, var


def eps_to_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sigma_t eps) / alpha_t."""
    return (x_t - sigma * eps) / alpha


def x0_to_eps(x_t: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - alpha_t x0) / sigma_t."""
    return (x_t - alpha * x0) / sigma


def v_target(x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Salimans & Ho 2022, Sec. 4: v = alpha_t eps - sigma_t x0."""
    return alpha * eps - sigma * x0


def v_to_x0_eps(
    x_t: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert v (alpha_t^2 + sigma_t^2 = 1): x0 = alpha_t x_t - sigma_t v, eps = sigma_t x_t + alpha_t v."""
    return alpha * x_t - sigma * v, sigma * x_t + alpha * v


class PredictionSpec(NamedTuple):
    """What a network trained for one target means: its training target, how its output splits into (x0, eps),
    and the min-SNR weight min(snr, gamma) expressed for that target (Hang et al. 2023, eq. 11)."""

    target: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x0, eps, a, s)
    split: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Denoised]  # (out, x_t, a, s)
    min_snr_weight: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (snr, min(snr, gamma))


PREDICTIONS: dict[str, PredictionSpec] = {
    "eps": PredictionSpec(lambda x0, eps, a, s: eps,
                          lambda out, x_t, a, s: Denoised(eps_to_x0(x_t, out, a, s), out),
                          lambda snr, clipped: clipped / snr),
    "x0": PredictionSpec(lambda x0, eps, a, s: x0,
                         lambda out, x_t, a, s: Denoised(out, x0_to_eps(x_t, out, a, s)),
                         lambda snr, clipped: clipped),
    "v": PredictionSpec(v_target,
                        lambda out, x_t, a, s: Denoised(*v_to_x0_eps(x_t, out, a, s)),
                        lambda snr, clipped: clipped / (snr + 1.0)),
}


def prediction_spec(prediction: str) -> PredictionSpec:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    return PREDICTIONS[prediction]


def split_prediction(
    prediction: Prediction, out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> Denoised:
    """Turn the network output for the configured target into both x0 and eps estimates."""
    return prediction_spec(prediction).split(out, x_t, alpha, sigma)


def make_denoiser(
    model: Callable[..., torch.Tensor],
    schedule: Schedule,
    prediction: Prediction = "eps",
    *,
    y: torch.Tensor | None = None,
    clip: float | None = None,
) -> Denoiser:
    """Wrap a network `model(x_t, t, y)` into a Denoiser; optionally clip x0 to [-clip, clip].

    The conversions run in x_t's dtype (float32 or float64), whatever precision the network computes in.
    """

    split = prediction_spec(prediction).split

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Denoised:
        alpha, sigma = schedule.at(schedule.alpha, t, x_t), schedule.at(schedule.sigma, t, x_t)
        labels = y if y is None or y.shape[0] == x_t.shape[0] else y.repeat(x_t.shape[0] // y.shape[0])
        out = model(x_t, t, labels).to(x_t.dtype)
        x0, eps = split(out, x_t, alpha, sigma)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            eps = x0_to_eps(x_t, x0, alpha, sigma)
        return Denoised(x0, eps)

    return denoise


def sample_t(batch: int, T: int, generator: torch.Generator | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """t ~ Uniform{1, ..., T} (Ho et al. 2020, Alg. 1 line 3); (B,) long."""
    return torch.randint(1, T + 1, (batch,), generator=generator, device=device)


def sample_t_lognormal(schedule: Schedule, batch: int, mean: float, std: float, generator: torch.Generator | None,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """t whose noise level sigma_t / alpha_t is log-normal: ln sigma ~ N(mean, std^2) (Karras et al. 2022, EDM's
    P_mean and P_std), rounded to the first discrete t at or above it and kept in 1..T; (B,) long.

    Uniform t under the cosine schedule centres ln sigma on 0 with wide tails (half the steps at sigma > 1);
    EDM's P_mean = -1.2 moves them towards the lower noise levels, where the strokes and edges are decided.
    """
    log_sigma = (schedule.sigma[1:] / schedule.alpha[1:]).log().to(device)  # increasing in t
    z = mean + std * torch.randn(batch, generator=generator, device=device, dtype=log_sigma.dtype)
    return torch.searchsorted(log_sigma, z).clamp(max=schedule.T - 1) + 1


def _uniform_t(schedule: Schedule, batch: int, mean: float, std: float, generator: torch.Generator | None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    return sample_t(batch, schedule.T, generator, device)


# diffusion.t_sampling: how training draws each sample's t, (schedule, batch, mean, std, generator, device) -> (B,)
T_SAMPLING: dict[str, Callable[..., torch.Tensor]] = {"uniform": _uniform_t, "lognormal": sample_t_lognormal}


def training_loss(
    model: Callable[..., torch.Tensor],
    schedule: Schedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    prediction: Prediction = "eps",
    weighting: Weighting = "simple",
    min_snr_gamma: float = 5.0,
) -> torch.Tensor:
    """L_simple of Ho et al. 2020, eq. 14, for an eps, x0 or v target; a scalar.

    weighting="min-snr" applies Hang et al. 2023, eq. 11: the per-sample loss weight
    min(snr_t, gamma) expressed for the chosen target (÷ snr for eps, ÷ (snr + 1) for v).
    """
    alpha, sigma = schedule.at(schedule.alpha, t, x0), schedule.at(schedule.sigma, t, x0)
    x_t = alpha * x0 + sigma * eps
    out = model(x_t, t, y).float()
    spec = prediction_spec(prediction)
    target = spec.target(x0, eps, alpha, sigma)
    per_sample = (out - target).pow(2).flatten(1).mean(1)
    if weighting == "simple":
        return per_sample.mean()
    snr = (alpha / sigma).pow(2).flatten()
    clipped = snr.clamp(max=min_snr_gamma)
    weight = spec.min_snr_weight(snr, clipped)
    return (weight.to(per_sample.dtype) * per_sample).mean()

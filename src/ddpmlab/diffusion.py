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

import math
from typing import TYPE_CHECKING, Callable, Literal, NamedTuple, get_args

import torch

from .schedules import Schedule

if TYPE_CHECKING:
    from .config import DiffusionConfig

Prediction = Literal["eps", "x0", "v", "edm"]
Weighting = Literal["simple", "min-snr", "edm", "uncertainty"]


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
    and a loss weight on the x0 error expressed for that target's error. The x0 error is the eps error times
    sigma/alpha and the v error times sigma, so ||x0 error||^2 = ||eps error||^2 / snr = ||v error||^2 / (snr + 1)."""

    target: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x0, eps, a, s)
    split: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Denoised]  # (out, x_t, a, s)
    from_x0_weight: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (snr, weight on the x0 error)
    c_in: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (a, s): the network sees c_in x_t

    def network_input(self, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """What the network is given for x_t: x_t itself, or c_in x_t for a preconditioned target."""
        return x_t if self.c_in is None else self.c_in(a, s) * x_t


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


def edm_spec(sigma_data: float) -> PredictionSpec:
    """EDM's preconditioning (Karras et al. 2022, eq. 7 and table 1) in this module's variance-preserving x_t.

    EDM writes the noisy image as x = x_t / alpha_t at noise level s = sigma_t / alpha_t and its denoiser as
    D = c_skip x + c_out F(c_in x), with c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2) and
    c_in = 1 / sqrt(s^2 + sd^2) (sd = sigma_data). In x_t the network sees x_t / sqrt(sigma^2 + alpha^2 sd^2), an
    input of the same variance at every t, and D = sd^2 alpha / (sigma^2 + alpha^2 sd^2) x_t + sigma sd /
    sqrt(sigma^2 + alpha^2 sd^2) F, so F's target is (x0 - c_skip x) / c_out. EDM's lambda(sigma) makes the x0 loss
    the plain loss on F. With sd = 1 this is v-prediction with its sign flipped (F = -v). c_noise is the network's
    own embedding of t.
    """
    sd2 = sigma_data**2

    def norm(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (s * s + a * a * sd2).sqrt()

    def skip_out(a: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = norm(a, s)
        return sd2 * a / (n * n), s * sigma_data / n

    def target(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        skip, c_out = skip_out(a, s)
        return (x0 - skip * (a * x0 + s * eps)) / c_out

    def split(out: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> Denoised:
        skip, c_out = skip_out(a, s)
        x0 = skip * x_t + c_out * out
        return Denoised(x0, x0_to_eps(x_t, x0, a, s))

    # the x0 error is c_out times F's: c_out^2 = sd^2 / (1 + snr sd^2)
    return PredictionSpec(target, split, lambda snr, w: w * sd2 / (1.0 + snr * sd2), lambda a, s: 1.0 / norm(a, s))


def prediction_spec(prediction: str, sigma_data: float = 0.5) -> PredictionSpec:
    """The spec of an eps, x0, v or EDM-preconditioned network (edm: with the data's standard deviation sigma_data)."""
    if prediction == "edm":
        return edm_spec(sigma_data)
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(get_args(Prediction))}")
    return PREDICTIONS[prediction]


def split_prediction(
    prediction: Prediction, out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
    sigma_data: float = 0.5,
) -> Denoised:
    """Turn the network output for the configured target into both x0 and eps estimates."""
    return prediction_spec(prediction, sigma_data).split(out, x_t, alpha, sigma)


def make_denoiser(
    model: Callable[..., torch.Tensor],
    schedule: Schedule,
    prediction: Prediction = "eps",
    *,
    y: torch.Tensor | None = None,
    clip: float | None = None,
    sigma_data: float = 0.5,
) -> Denoiser:
    """Wrap a network `model(x_t, t, y)` into a Denoiser; optionally clip x0 to [-clip, clip].

    The conversions run in x_t's dtype (float32 or float64), whatever precision the network computes in.
    sigma_data: the data's standard deviation of an EDM-preconditioned network (prediction "edm").
    """

    spec = prediction_spec(prediction, sigma_data)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Denoised:
        alpha, sigma = schedule.at(schedule.alpha, t, x_t), schedule.at(schedule.sigma, t, x_t)
        labels = y if y is None or y.shape[0] == x_t.shape[0] else y.repeat(x_t.shape[0] // y.shape[0])
        out = model(spec.network_input(x_t, alpha, sigma), t, labels).to(x_t.dtype)
        x0, eps = spec.split(out, x_t, alpha, sigma)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            eps = x0_to_eps(x_t, x0, alpha, sigma)
        return Denoised(x0, eps)

    return denoise


def sample_t(batch: int, T: int, generator: torch.Generator | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """t ~ Uniform{1, ..., T} (Ho et al. 2020, Alg. 1 line 3); (B,) long."""
    return torch.randint(1, T + 1, (batch,), generator=generator, device=device)


def t_at_log_sigma(schedule: Schedule, z: torch.Tensor) -> torch.Tensor:
    """The first discrete t whose ln(sigma_t / alpha_t) is at or above z, kept in 1..T; (B,) long."""
    log_sigma = (schedule.sigma[1:] / schedule.alpha[1:]).log().to(z.device, z.dtype)  # increasing in t
    return torch.searchsorted(log_sigma, z).clamp(max=schedule.T - 1) + 1


def sample_t_lognormal(schedule: Schedule, batch: int, d: DiffusionConfig, generator: torch.Generator | None,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """t whose noise level sigma_t / alpha_t is log-normal: ln sigma ~ N(t_mean, t_std^2) (Karras et al. 2022, EDM's
    P_mean and P_std), rounded to the first discrete t at or above it and kept in 1..T; (B,) long.

    Uniform t under the cosine schedule centres ln sigma on 0 with wide tails (half the steps at sigma > 1);
    EDM's P_mean = -1.2 moves them towards the lower noise levels, where the strokes and edges are decided.
    """
    z = d.t_mean + d.t_std * torch.randn(batch, generator=generator, device=device, dtype=torch.float64)
    return t_at_log_sigma(schedule, z)


def sample_t_laplace(schedule: Schedule, batch: int, d: DiffusionConfig, generator: torch.Generator | None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """t whose log-SNR lambda = ln(alpha_t^2 / sigma_t^2) has the Laplace density exp(-|lambda - t_loc| / t_scale)
    / (2 t_scale) (Hang et al. 2024, "Improved noise schedule for diffusion training": loc 0, scale 0.5), drawn by
    inverting its CDF; ln(sigma / alpha) = -lambda / 2. (B,) long."""
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64) - 0.5  # [-1/2, 1/2)
    lam = d.t_loc - d.t_scale * torch.sign(u) * torch.log1p(-2.0 * u.abs())
    return t_at_log_sigma(schedule, -0.5 * lam)


def sample_t_logistic(schedule: Schedule, batch: int, d: DiffusionConfig, generator: torch.Generator | None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """t whose log-SNR lambda has the logistic density of location t_loc and scale t_scale: lambda = t_loc +
    t_scale * ln(u / (1 - u)), u ~ U(0, 1). Uniform t under the cosine schedule has the heavier-tailed density
    sech(lambda / 2) / (2 pi) (Kingma & Gao 2023); this keeps its bell shape and moves or narrows it. (B,) long."""
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    lam = d.t_loc + d.t_scale * (u.log() - torch.log1p(-u))
    return t_at_log_sigma(schedule, -0.5 * lam)


def _uniform_t(schedule: Schedule, batch: int, d: DiffusionConfig, generator: torch.Generator | None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    return sample_t(batch, schedule.T, generator, device)


# diffusion.t_sampling: how training draws each sample's t, (schedule, batch, diffusion config, generator, device)
# -> (B,). "adaptive" keeps state of its own: AdaptiveT.
T_SAMPLING: dict[str, Callable[..., torch.Tensor]] = {"uniform": _uniform_t, "lognormal": sample_t_lognormal,
                                                      "laplace": sample_t_laplace, "logistic": sample_t_logistic}


class AdaptiveT:
    """Importance sampling of t by its running loss (after Nichol & Dhariwal 2021, sec. 3.3, on bins of t).

    1..T is cut into `bins` bins of (nearly) equal width. Until every bin has seen `warmup` samples, t is uniform;
    then bin k is drawn with probability p_k proportional to its width times sqrt(E[loss^2]) in it (a running mean over
    about the last 1 / (1 - decay) of its samples), mixed with `uniform_share` of the uniform density so that no bin
    starves, and t uniformly within the bin. Each sample's loss is weighted by (the bin's share under uniform t) / p_k,
    so the objective stays the uniform-t objective; only its variance falls, as the draws go where the loss (and its
    noise) is largest.
    """

    def __init__(self, T: int, bins: int = 20, decay: float = 0.99, warmup: int = 10, uniform_share: float = 0.1):
        bins = min(bins, T)
        self.T, self.bins, self.decay, self.warmup, self.uniform_share = T, bins, decay, warmup, uniform_share
        self.edges = torch.tensor([k * T // bins for k in range(bins + 1)])  # bin k holds t - 1 in [e_k, e_k+1)
        self.uniform = (self.edges[1:] - self.edges[:-1]).double() / T  # each bin's share of uniform t
        self.mean_sq = torch.zeros(bins, dtype=torch.float64)
        self.seen = torch.zeros(bins, dtype=torch.int64)

    def bin_of(self, t: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.edges, t.cpu() - 1, right=True) - 1

    def probs(self) -> torch.Tensor:
        if bool((self.seen < self.warmup).any()):
            return self.uniform.clone()
        p = self.mean_sq.sqrt() * self.uniform  # each t of bin k drawn in proportion to its bin's rms loss
        if not bool(p.sum() > 0):
            return self.uniform.clone()
        return (1.0 - self.uniform_share) * p / p.sum() + self.uniform_share * self.uniform

    def draw(self, batch: int, generator: torch.Generator | None, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, importance weight: uniform t's probability of the bin over p_k), both (B,)."""
        p = self.probs()
        k = torch.multinomial(p.to(device), batch, replacement=True, generator=generator)
        edges = self.edges.to(device)
        lo, hi = edges[k], edges[k + 1]
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        t = lo + 1 + (u * (hi - lo)).long()  # u < 1: t - 1 stays below hi
        weight = (self.uniform / p).to(device)[k]
        return t, weight.float()

    def observe(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Fold one batch's per-sample losses (before the importance weight) into the running means."""
        k = self.bin_of(t)
        sq = losses.detach().double().cpu().pow(2)
        count = torch.bincount(k, minlength=self.bins)
        total = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, k, sq)
        has = count > 0
        keep = self.decay ** count[has].double()
        fresh = self.seen[has] == 0  # a bin's first samples set its mean outright
        keep = torch.where(fresh, torch.zeros_like(keep), keep)
        self.mean_sq[has] = keep * self.mean_sq[has] + (1 - keep) * total[has] / count[has]
        self.seen += count

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean_sq": self.mean_sq.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["mean_sq"].shape != self.mean_sq.shape:
            raise ValueError(f"adaptive t state has {len(state['mean_sq'])} bins, this run {self.bins}")
        self.mean_sq, self.seen = state["mean_sq"].clone().double(), state["seen"].clone().long()


class LogVar(torch.nn.Module):
    """EDM2's learned loss weight (Karras et al. 2024, sec. 5, "uncertainty"): u(sigma), a linear map of fixed random
    Fourier features of c_noise = ln(sigma / alpha) / 4. The loss becomes w / e^u * loss + u, whose minimum over u is
    at e^u = w * E[loss | sigma]: every noise level's loss is normalised by its own expected size as training goes."""

    def __init__(self, channels: int = 128, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels, generator=g))
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels, generator=g))
        self.linear = torch.nn.Linear(channels, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, log_sigma: torch.Tensor) -> torch.Tensor:
        feats = torch.cos(log_sigma.float()[:, None] / 4 * self.freqs + self.phases) * math.sqrt(2)
        return self.linear(feats).squeeze(1)


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
    sigma_data: float = 0.5,
    logvar: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reduce: bool = True,
) -> torch.Tensor:
    """L_simple of Ho et al. 2020, eq. 14, for an eps, x0, v or EDM-preconditioned target; a scalar
    (reduce=False: per sample, (B,)).

    The weight on each sample's x0 error, expressed for the chosen target (PredictionSpec.from_x0_weight):
    - "simple": none (1 on the target's own error);
    - "min-snr": min(snr_t, gamma) (Hang et al. 2023, eq. 11);
    - "edm": lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 with sigma = sigma_t / alpha_t
      (Karras et al. 2022, eq. 8 and table 1); with sigma_data = 1 it is the plain v loss;
    - "uncertainty": EDM's weight divided by e^u(sigma), plus u(sigma), u the learned `logvar` (EDM2, LogVar).
    """
    alpha, sigma = schedule.at(schedule.alpha, t, x0), schedule.at(schedule.sigma, t, x0)
    x_t = alpha * x0 + sigma * eps
    spec = prediction_spec(prediction, sigma_data)
    out = model(spec.network_input(x_t, alpha, sigma), t, y).float()
    target = spec.target(x0, eps, alpha, sigma)
    per_sample = (out - target).pow(2).flatten(1).mean(1)
    if weighting != "simple":
        snr = (alpha / sigma).pow(2).flatten().to(per_sample.dtype)
        if weighting == "min-snr":
            w_x0 = snr.clamp(max=min_snr_gamma)
        else:  # EDM's lambda in terms of snr = 1 / sigma^2
            w_x0 = (1.0 + sigma_data**2 * snr) / sigma_data**2
        per_sample = spec.from_x0_weight(snr, w_x0) * per_sample
        if weighting == "uncertainty":
            if logvar is None:
                raise ValueError('weighting="uncertainty" needs the learned logvar')
            u = logvar(-0.5 * snr.log()).to(per_sample.dtype)
            per_sample = per_sample / u.exp() + u
    return per_sample.mean() if reduce else per_sample

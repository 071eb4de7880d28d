"""Noise schedules and sampler timestep spacings: pure math on tensors.

Notation (Ho et al. 2020; Kingma et al. 2021):
    t            integer time, 1..T; t = 0 is clean data
    beta_t       per-step variance of q(x_t | x_{t-1})
    alpha_bar_t  prod_{s<=t} (1 - beta_s); alpha_bar_0 = 1
    alpha_t      sqrt(alpha_bar_t), the signal scale of q(x_t | x_0)
    sigma_t      sqrt(1 - alpha_bar_t), the noise scale of q(x_t | x_0)
    lambda_t     log(alpha_t^2 / sigma_t^2), the log signal-to-noise ratio

Every table has T + 1 entries indexed by t, so code reads like the equations.
Tables are float64; callers cast where data meets the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, get_args

import torch

from .errors import ConfigError

ScheduleName = Literal["linear", "cosine", "sigmoid", "geometric"]
Spacing = Literal["leading", "trailing", "linspace", "quadratic", "karras", "logsnr", "logsnr-window", "rho-window"]
# quadratic, karras, the logsnr spacings and rho-window may return fewer than `steps` timesteps: levels that round to the same t
# merge.

BETA_MAX = 0.999  # Nichol & Dhariwal 2021, Sec. 3.2: clip beta to avoid a singularity at t = T


@dataclass(frozen=True)
class Schedule:
    """A discrete-time variance schedule; betas: (T + 1,) float64 with betas[0] = 0."""

    name: str
    betas: torch.Tensor

    @property
    def T(self) -> int:
        return self.betas.numel() - 1

    @property
    def alpha_bar(self) -> torch.Tensor:
        """(T + 1,) cumulative product prod_{s<=t}(1 - beta_s), alpha_bar[0] = 1."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    @property
    def alpha(self) -> torch.Tensor:
        """(T + 1,) signal scale sqrt(alpha_bar_t)."""
        return self.alpha_bar.sqrt()

    @property
    def sigma(self) -> torch.Tensor:
        """(T + 1,) noise scale sqrt(1 - alpha_bar_t)."""
        return (1.0 - self.alpha_bar).sqrt()

    @property
    def log_snr(self) -> torch.Tensor:
        """(T + 1,) lambda_t = log(alpha_bar_t / (1 - alpha_bar_t)); +inf at t = 0."""
        ab = self.alpha_bar
        return torch.log(ab) - torch.log1p(-ab)

    def at(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Gather table[t] for a batch t: (B,) and shape it to broadcast against `like`: (B, ...)."""
        dtype = torch.float32 if like.device.type == "mps" else torch.float64
        values = table.to(device=t.device, dtype=dtype)[t.long()]
        return values.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def _from_alpha_bar(name: str, alpha_bar: torch.Tensor) -> Schedule:
    """Betas from alpha_bar_1..T (float64), clipped to BETA_MAX."""
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar])
    betas = (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0.0, BETA_MAX)
    return Schedule(name, torch.cat([torch.zeros(1, dtype=torch.float64), betas]))


def linear(T: int, beta_start: float | None = None, beta_end: float | None = None) -> Schedule:
    """Ho et al. 2020, Sec. 4: betas linear from 1e-4 to 0.02 at T = 1000.

    Without explicit endpoints they are rescaled by 1000 / T (Nichol & Dhariwal 2021),
    so any T ends near pure noise.
    """
    start, end = linear_endpoints(T, beta_start, beta_end)
    if not 0.0 < start <= end < 1.0:
        raise ValueError(linear_endpoint_problem(T, start, end))
    betas = torch.linspace(start, end, T, dtype=torch.float64)
    return Schedule("linear", torch.cat([torch.zeros(1, dtype=torch.float64), betas]))


def linear_endpoints(T: int, beta_start: float | None = None, beta_end: float | None = None) -> tuple[float, float]:
    """(beta_1, beta_T) of the linear schedule: the given endpoints, else 1e-4 and 0.02 rescaled by 1000 / T."""
    scale = 1000.0 / T
    return (beta_start if beta_start is not None else 1e-4 * scale,
            beta_end if beta_end is not None else 0.02 * scale)


def linear_endpoint_problem(T: int, start: float, end: float) -> str:
    """The one-line reason why linear betas from `start` to `end` are no variance schedule ('' if they are one)."""
    if 0.0 < start <= end < 1.0:
        return ""
    if end >= 1.0:
        how = "diffusion.beta_end" if not math.isclose(end, 0.02 * 1000.0 / T) else f"0.02 x 1000 / T at T={T}"
        return (f"linear schedule: beta_T = {end:.3g} ({how}) must be below 1, or alpha_bar_T is not in (0, 1); "
                f"use diffusion.T >= 21, set diffusion.beta_end below 1, or use diffusion.schedule=cosine")
    return (f"linear schedule needs 0 < beta_start <= beta_end < 1; got beta_start={start:.3g}, "
            f"beta_end={end:.3g}; fix diffusion.beta_start / diffusion.beta_end")


def check_schedule(schedule: Schedule) -> Schedule:
    """Refuse a schedule whose alpha_bar_T is not in (0, 1) or whose log-SNR is not finite and decreasing for t >= 1."""
    ab_T = float(schedule.alpha_bar[-1])
    lam = schedule.log_snr[1:]
    if not 0.0 < ab_T < 1.0 or not bool(torch.isfinite(lam).all()) or not bool((lam[1:] < lam[:-1]).all()):
        raise ValueError(
            f"{schedule.name} schedule at T={schedule.T} gives alpha_bar_T = {ab_T:.3g}; it must lie in (0, 1) with a "
            f"finite log-SNR at every t (a geometric schedule with a large T underflows: raise diffusion.a or lower T)"
        )
    return schedule


def cosine(T: int, s: float = 0.008) -> Schedule:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar_t = f(t)/f(0), f(t) = cos^2(pi/2 (t/T + s)/(1 + s))."""
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    return _from_alpha_bar("cosine", (f / f[0])[1:])


def sigmoid(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> Schedule:
    """Jabri et al. 2022 (RIN), Alg. 1: alpha_bar from a shifted, rescaled sigmoid of t/T."""
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    alpha_bar = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    return _from_alpha_bar("sigmoid", alpha_bar.clamp(1e-9, 1.0))


def geometric(T: int, a: float = 0.9) -> Schedule:
    """The T = 30 MNIST tutorial's schedule: alpha_bar_t = a^t, i.e. a constant beta_t = 1 - a."""
    if not 0.0 < a < 1.0:
        raise ValueError(f"geometric schedule needs 0 < a < 1, got {a}")
    betas = torch.full((T,), 1.0 - a, dtype=torch.float64)
    return Schedule("geometric", torch.cat([torch.zeros(1, dtype=torch.float64), betas]))


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "linear": linear,
    "cosine": cosine,
    "sigmoid": sigmoid,
    "geometric": geometric,
}
# the DiffusionConfig fields each schedule takes (config.validate refuses the others when set)
SCHEDULE_PARAMS: dict[str, tuple[str, ...]] = {
    "linear": ("beta_start", "beta_end"),
    "cosine": (),
    "sigmoid": (),
    "geometric": ("a",),
}


def make_schedule(name: str, T: int, **params: float | None) -> Schedule:
    """Build a schedule by name with its own parameters (SCHEDULE_PARAMS); the only string dispatch for schedules."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if T < 1:
        raise ValueError(f"T must be a positive integer, got {T}")
    unused = sorted(set(params) - set(SCHEDULE_PARAMS[name]))
    if unused:
        raise ValueError(f"the {name} schedule takes no {', '.join(unused)}")
    return check_schedule(SCHEDULES[name](T, **params))


def schedule_from_config(d) -> Schedule:
    """The schedule a DiffusionConfig describes (0 for beta_start / beta_end means the T-rescaled default)."""
    try:
        given = {"beta_start": d.beta_start or None, "beta_end": d.beta_end or None, "a": d.a}  # 0: the default
        return make_schedule(d.schedule, d.T, **{k: given[k] for k in SCHEDULE_PARAMS[d.schedule]})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def spaced_timesteps(schedule: Schedule, steps: int, spacing: Spacing = "trailing") -> torch.Tensor:
    """Decreasing integer timesteps in [1, T] for a sampler that takes `steps` network evaluations.

    leading / trailing / linspace follow Lin et al. 2024, Table 2 ("trailing" starts at t = T,
    so the first step sees pure noise); quadratic is DDIM's Sec. D.2 choice, t = round(linspace(1,
    sqrt(T), S)^2) here, ending at T where the paper's code ends near 0.8 T (linspace(0, sqrt(0.8 T),
    S)^2): alpha_bar at 0.8 T is 1.5e-3 under the linear schedule but 0.094 under cosine, so x_T ~ N(0, I)
    would be started far from its noise level there; ending at T keeps every schedule exact. karras places the
    steps at the noise levels of Karras et al. 2022, eq. 5 (rho = 7), mapped to the nearest t;
    logsnr spaces them uniformly in log-SNR (Lu et al. 2022, DPM-Solver, Sec. 3.3's recommended choice);
    logsnr-window does too, over a window that depends on the step count (_logsnr_window_timesteps); rho-window
    spans the same window with Karras's eq. 5 at rho = -7: in log-SNR its steps shrink towards low noise, where
    karras's (rho = 7) shrink towards high noise (_rho_window_timesteps).
    """
    T = schedule.T
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and T={T}, got {steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    ts = torch.unique(SPACINGS[spacing](schedule, steps).long().clamp(1, T))  # ascending, duplicates (tiny T) merged
    return ts.flip(0)


def _leading(schedule: Schedule, steps: int) -> torch.Tensor:
    return torch.arange(0, steps, dtype=torch.float64) * (schedule.T // steps) + 1


def _trailing(schedule: Schedule, steps: int) -> torch.Tensor:
    return torch.round(schedule.T - torch.arange(steps, dtype=torch.float64) * (schedule.T / steps)).flip(0)


def _linspace(schedule: Schedule, steps: int) -> torch.Tensor:
    return torch.round(torch.linspace(1, schedule.T, steps, dtype=torch.float64))


def _quadratic(schedule: Schedule, steps: int) -> torch.Tensor:
    return torch.round(torch.linspace(1.0, math.sqrt(schedule.T), steps, dtype=torch.float64) ** 2)


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. 5: sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


KARRAS_SIGMA_MAX = 80.0  # Karras et al. 2022, Table 1: larger noise levels add steps but no quality


def _nearest_timesteps(schedule: Schedule, ve_sigmas: torch.Tensor) -> torch.Tensor:
    """The t in [1, T] whose sigma_t / alpha_t is nearest (in log) to each target; the first is forced to T."""
    ve_sigma = (schedule.sigma[1:] / schedule.alpha[1:]).clamp_min(1e-12)
    idx = torch.argmin((ve_sigma.log()[None, :] - ve_sigmas.log()[:, None]).abs(), dim=1)
    ts = (idx + 1).to(torch.float64)
    ts[0] = schedule.T
    return ts


def _ve_sigma_range(schedule: Schedule) -> tuple[float, float]:
    """(sigma at t = 1, min(sigma at T, 80)) of the variance-exploding sigma = sigma_t / alpha_t."""
    ve_sigma = (schedule.sigma[1:] / schedule.alpha[1:]).clamp_min(1e-12)
    return float(ve_sigma[0]), min(float(ve_sigma[-1]), KARRAS_SIGMA_MAX)


def _karras_timesteps(schedule: Schedule, steps: int) -> torch.Tensor:
    """Nearest discrete t for each Karras noise level of the variance-exploding sigma = sigma_t / alpha_t.

    Levels run from sigma at t = 1 to min(sigma at T, 80); the first step is always t = T, where
    x_T ~ N(0, I) is exact (cosine schedules reach sigma ~ 1e4 there, which would waste steps).
    """
    return _nearest_timesteps(schedule, karras_sigmas(*_ve_sigma_range(schedule), steps))


def _logsnr_timesteps(schedule: Schedule, steps: int) -> torch.Tensor:
    """Nearest discrete t for noise levels uniform in log-SNR = -2 log sigma, over the same range as karras."""
    lo, hi = _ve_sigma_range(schedule)
    return _log_uniform_timesteps(schedule, lo, hi, steps)


def _log_uniform_timesteps(schedule: Schedule, lo: float, hi: float, steps: int) -> torch.Tensor:
    """Nearest discrete t for `steps` noise levels sigma_t / alpha_t uniform in log from hi down to lo; first t = T."""
    return _nearest_timesteps(schedule, torch.exp(torch.linspace(math.log(hi), math.log(lo), steps,
                                                                 dtype=torch.float64)))


WINDOW_SIGMA_MIN_X_STEPS2 = 4.0  # logsnr-window's last level is at sigma = 4 / steps^2


def logsnr_window(schedule: Schedule, steps: int) -> tuple[float, float]:
    """(sigma_min, sigma_max) of logsnr-window: (max(sigma at t = 1, 4 / steps^2), min(sigma at T, 80)).

    logsnr's range with its bottom raised for few steps. The last step returns the x0 estimate at sigma_min, whose
    error grows with sigma_min, while the interior log-SNR steps shrink as the window narrows; sigma_min ~ 1 / steps^2
    balanced the two on benchmarks/sampler_oracle.py's Gaussian mixtures (c = 3-8 tried at 5-50 steps; see the
    README's sampler table). The top stays at EDM's 80: the exact denoiser there favoured a top of 20 (one first
    step from t = T straight to sigma = 20), but that step multiplies the network's error at t = T by
    (sigma_T - 20) / 20 ~ 7, and on a trained 2-D network (the moons preset) it made DPM-Solver++(2M) 4-7x worse
    at 10-20 steps than a top of 80.
    """
    lo, hi = _ve_sigma_range(schedule)
    return max(lo, WINDOW_SIGMA_MIN_X_STEPS2 / steps**2), hi


def _logsnr_window_timesteps(schedule: Schedule, steps: int) -> torch.Tensor:
    """Levels uniform in log-SNR from t = T over the window logsnr_window(schedule, steps)."""
    return _log_uniform_timesteps(schedule, *logsnr_window(schedule, steps), steps)


WINDOW_RHO = -7.0  # rho-window: Karras's eq. 5 with rho < 0, so its log-SNR steps shrink towards low noise


def window_timesteps(schedule: Schedule, steps: int, top: float, bottom: float, rho: float | None = None
                     ) -> torch.Tensor:
    """Decreasing integer timesteps: t = T, then levels sigma = sigma_t / alpha_t from min(top, sigma at T) down to
    max(bottom, sigma at t = 1), log-uniform (rho None) or by Karras's eq. 5 with exponent rho, each mapped to the
    nearest t (levels that round to the same t merge). logsnr-window and rho-window are two members of this family;
    samplers/tuning.py searches it."""
    ve_sigma = (schedule.sigma[1:] / schedule.alpha[1:]).clamp_min(1e-12)
    lo, hi = max(float(ve_sigma[0]), bottom), min(float(ve_sigma[-1]), top)
    if lo >= hi:
        raise ValueError(f"the window ({bottom:g}, {top:g}) holds no noise level of this schedule")
    ts = _log_uniform_timesteps(schedule, lo, hi, steps) if rho is None else _nearest_timesteps(
        schedule, karras_sigmas(lo, hi, steps, rho=rho))
    return torch.unique(ts.long().clamp(1, schedule.T)).flip(0)


def _rho_window_timesteps(schedule: Schedule, steps: int) -> torch.Tensor:
    """Levels uniform in sigma^(1/rho), rho = WINDOW_RHO = -7, from t = T over the window of logsnr-window.

    Log-uniform levels are the limit rho -> +-inf of Karras's eq. 5. A step of u = sigma^(1/rho) is a step of
    rho du / u in log sigma, so rho = 7 (karras) takes its shortest log-SNR steps at high noise and rho = -7 at low
    noise: from the window's top at 80 the first interior level is at sigma ~ 9 with 5 steps, ~ 20 with 10. On
    benchmarks/sampler_oracle.py's Gaussian mixtures the log-uniform window's error was not monotone in the step
    count (third-order UniPC on the wide ring was 1.6x further from the exact ODE at 8 steps than at 5);
    benchmarks/spacing_search.py searched the top, the bottom c / steps^p and rho for unipc-3 at 5-20 steps:
    negative rho won, and rho = -7 with logsnr-window's own bottom came within 3% of the best single setting
    (benchmarks/RESULTS.md, section 5).
    """
    lo, hi = logsnr_window(schedule, steps)
    return _nearest_timesteps(schedule, karras_sigmas(lo, hi, steps, rho=WINDOW_RHO))


# spacing name -> timesteps(schedule, steps) as floats in [1, T], any order; spaced_timesteps rounds and sorts
SPACINGS: dict[str, Callable[[Schedule, int], torch.Tensor]] = {
    "leading": _leading,
    "trailing": _trailing,
    "linspace": _linspace,
    "quadratic": _quadratic,
    "karras": _karras_timesteps,
    "logsnr": _logsnr_timesteps,
    "logsnr-window": _logsnr_window_timesteps,
    "rho-window": _rho_window_timesteps,
}
assert tuple(SPACINGS) == get_args(Spacing), "Spacing lists the registry's names"

"""Samplers: stateless functions sharing one signature,
sampler(denoise, x_T, schedule, timesteps, *, generator=None, callback=None, **options) -> x_0.

SAMPLERS = {name: SamplerSpec} is the only dispatch: each spec holds the function, the options it takes (each the
name of a `sample.*` config field with its default) and the spacing it runs with by step count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Literal, get_args

from ..schedules import Spacing
from .common import Callback, Generators, randn_like
from .ddim import ddim_invert, sample_ddim
from .ddpm import sample_ddpm
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_3m
from .karras import heun_evaluations, sample_euler, sample_heun
from .unipc import sample_unipc


# sample.spacing = "auto": the spacing each sampler runs with, by step count, as (up to this many steps, spacing),
# the last entry for any count. Chosen from benchmarks/sampler_oracle.py (every sampler x spacing x NFE in
# {5, 8, 10, 15, 20, 50} on six Gaussian mixtures, error against the exact probability-flow ODE; the README's
# sampler table) under the linear and the cosine schedule, with diffusers' 39 scheduler settings run on the same
# oracle: at each NFE the spacing whose worst ratio to diffusers' best setting for that mixture (over the mixtures and
# both schedules) is smallest, among those that start at t = T (x_T ~ N(0, I) holds there); `python
# benchmarks/sampler_table.py --choose --json benchmarks/results/sampler_oracle*.json` prints the oracle's choice. Near-ties
# (within 15%) keep the neighbouring step counts' spacing, and limits between measured counts sit midway. The
# multistep solvers mostly want logsnr-window for few steps (it is logsnr from about 20 steps on), then levels packed
# towards t = 1 (quadratic) or karras. rho-window (the same window, its log-SNR steps shrinking towards low noise)
# lowered the worst ratio of every multistep solver at most NFE, but it is taken only where two trained networks
# (benchmarks/spacing_trained.py --rows rho-window: fashion-mnist-text's FID under cosine, moons' energy distance
# under linear) support it, i.e. one gained more than 5% and neither lost more than 10%: at 8 NFE for dpmpp-2m,
# unipc-2 and unipc-3 (unipc-3: 1.91x -> 1.08x) and at 5 for dpmpp-3m (RESULTS 5c). Elsewhere the earlier choice
# stays, e.g. trailing for dpmpp-3m at 8 NFE, where moons lost 20% with rho-window.
# unipc-3 takes logsnr beyond 30 steps, not the six mixtures' quadratic: both are below diffusers' best on the six
# (0.96x and 0.75x at 50 NFE, worst over both schedules), but on the held-out mixture of Fashion-MNIST's classes
# (sampler_oracle.py --held-out: image-like spreads over 784 dimensions) quadratic is 1.84x under cosine and logsnr
# 0.06x; the trained networks saw no difference (fashion-mnist-text FID 3.20 / 3.22, moons 0.0013 / 0.0014).
# DDIM, Euler and Heun keep trailing for few steps: the window did not help these lower-order steps.
# DDPM's Gaussian reverse steps are exact only as the steps approach T: on the ring mixture (width 0.15) the
# posterior variance shrinks each mode's variance to 0.70 of the truth at 20 trailing steps and 0.75 at 100,
# logsnr spacing to 0.84 and 0.92 (beta variance inflates them to 1.29 and 1.13); at steps = T every spacing is
# the full chain, and trailing is kept there so that no timestep is merged away.
AUTO_SPACING: dict[str, tuple[tuple[int, Spacing], ...]] = {
    "ddpm": ((999_999, "logsnr"),),
    "ddim": ((10, "trailing"), (999_999, "quadratic")),
    "dpmpp-2m": ((6, "logsnr-window"), (9, "rho-window"), (20, "logsnr-window"), (999_999, "logsnr")),
    "dpmpp-3m": ((6, "rho-window"), (9, "trailing"), (20, "logsnr-window"), (35, "logsnr"), (999_999, "karras")),
    "unipc-2": ((6, "logsnr-window"), (9, "rho-window"), (17, "logsnr-window"), (999_999, "quadratic")),
    "unipc-3": ((6, "logsnr-window"), (9, "rho-window"), (30, "logsnr-window"), (999_999, "logsnr")),
    "euler": ((10, "trailing"), (999_999, "quadratic")),
    "heun": ((7, "trailing"), (999_999, "quadratic")),
}
DEFAULT_SPACING: dict[str, Spacing] = {name: table[-1][1] for name, table in AUTO_SPACING.items()}  # many steps

SamplerName = Literal["ddpm", "ddim", "dpmpp-2m", "dpmpp-3m", "unipc-2", "unipc-3", "euler", "heun"]


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler: its function, the options it takes ({keyword: default}, each a `sample.*` config field of the
    same name) and its auto spacing table ((up to this many steps, spacing), ...)."""

    fn: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    auto_spacing: tuple[tuple[int, Spacing], ...] = ((999_999, "trailing"),)
    evaluations: Callable[[Any, Any], int] = lambda schedule, timesteps: len(timesteps)  # network calls per sample

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def option_values(self, settings: Any) -> dict[str, Any]:
        """The keyword arguments for fn from a SampleConfig: its value of each option this sampler takes."""
        return {name: getattr(settings, name) for name in self.options}


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(sample_ddpm, {"variance": "posterior"}, AUTO_SPACING["ddpm"]),
    "ddim": SamplerSpec(sample_ddim, {"eta": 0.0}, AUTO_SPACING["ddim"]),
    "dpmpp-2m": SamplerSpec(sample_dpmpp_2m, {}, AUTO_SPACING["dpmpp-2m"]),
    "dpmpp-3m": SamplerSpec(sample_dpmpp_3m, {}, AUTO_SPACING["dpmpp-3m"]),
    "unipc-2": SamplerSpec(partial(sample_unipc, order=2), {}, AUTO_SPACING["unipc-2"]),
    "unipc-3": SamplerSpec(partial(sample_unipc, order=3), {}, AUTO_SPACING["unipc-3"]),
    "euler": SamplerSpec(sample_euler, {}, AUTO_SPACING["euler"]),
    "heun": SamplerSpec(sample_heun, {"s_churn": 0.0}, AUTO_SPACING["heun"], heun_evaluations),
}
assert set(SAMPLERS) == set(get_args(SamplerName)), "SamplerName lists the registry's names"
SAMPLER_OPTIONS: dict[str, Any] = {k: v for spec in SAMPLERS.values() for k, v in spec.options.items()}


def option_problem(sampler: str, settings: Any) -> str:
    """Why a SampleConfig sets an option that `sampler` does not take ('' when it sets none)."""
    spec = SAMPLERS[sampler]
    for name, default in SAMPLER_OPTIONS.items():
        if name not in spec.options and getattr(settings, name) != default:
            users = ", ".join(n for n, s in SAMPLERS.items() if name in s.options)
            takes = ", ".join(spec.options) or "no options"
            return (f"sample.{name} = {getattr(settings, name)!r} applies only to {users}; sampler {sampler} takes "
                    f"{takes}: drop it or choose {users}")
    return ""

# Below these step counts a sampler drops modes of the oracle mixtures whatever the spacing: Heun keeps 4 of the 6
# components of the narrow off-centre mixture at 4 steps (7 evaluations) and 5 of 6 at 5 steps (9), all of them
# from 8 steps (15), the smallest measured count that keeps every mode; sampling warns with the reason.
MIN_STEPS: dict[str, int] = {"heun": 8}


def resolve_spacing(sampler: str, spacing: str, steps: int | None = None, T: int | None = None) -> Spacing:
    """sample.spacing, with "auto" replaced by the sampler's choice for `steps` (many steps when not given)."""
    if spacing != "auto":
        return spacing  # type: ignore[return-value]
    if steps is not None and T is not None and steps >= T:
        return "trailing"  # the full chain: every t once
    table = SAMPLERS[sampler].auto_spacing if sampler in SAMPLERS else ((999_999, "trailing"),)
    return next(sp for limit, sp in table if steps is None or steps <= limit)


def steps_warning(sampler: str, steps: int) -> str:
    """Why `steps` is below the sampler's working range, and what to use instead ('' when it is not)."""
    need = MIN_STEPS.get(sampler, 0)
    if steps >= need:
        return ""
    return (f"{sampler} at {steps} steps is below its working range: on the oracle mixtures it drops modes below "
            f"{need} steps ({2 * need - 1} evaluations); use --steps {need} or more, or dpmpp-3m / dpmpp-2m with "
            f"the same {2 * steps - 1} evaluations")


__all__ = [
    "AUTO_SPACING",
    "DEFAULT_SPACING",
    "MIN_STEPS",
    "SAMPLERS",
    "SAMPLER_OPTIONS",
    "Callback",
    "SamplerName",
    "SamplerSpec",
    "Generators",
    "ddim_invert",
    "get_sampler",
    "randn_like",
    "resolve_spacing",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_3m",
    "sample_euler",
    "sample_heun",
    "option_problem",
    "sample_unipc",
    "steps_warning",
]


def get_sampler(name: str) -> Callable[..., object]:
    """The sampler function registered as `name`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name].fn

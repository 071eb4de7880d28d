"""Timesteps tuned to one network: the levels of a few-step solve fitted to a many-step solve of the same ODE.

A spacing places its levels the same way for every network. Given the network, the levels of an S-step solve can
be fitted to it instead: draw held-out noise, solve the probability-flow ODE from it once with many steps (the
reference), and choose the S levels whose solve lands closest to the reference. The objective is the mean L2
distance per sample, the error benchmarks/sampler_oracle.py measures against the exact ODE, with the reference in
place of the exact solution (which is known only for the oracle mixtures).

The search has two stages. First a grid over a family of windows (schedules.window_timesteps: from t = T, levels
between a top and a bottom sigma = sigma_t / alpha_t, log-uniform or by Karras's eq. 5 with exponent rho; the
fixed spacings logsnr-window and rho-window are members): three numbers, so a few dozen held-out draws pin them
down and there are no local minima to get stuck in. Then coordinate descent from the best window: one level at a
time moves by +-move in log sigma while that brings the solve closer, the move halving when no level's move helps.
Every level is a whole timestep, one the network was trained at, and the first stays at t = T, where x_T is drawn.
The last level never rises above the start's: the solve returns the x0 estimate there, E[x0 | x_t], an average over
what x_t leaves open, and a higher last level buys L2 closeness to the reference with blur (on `fashion-mnist-text`,
unipc-3 at 5 steps tuned without this bound moved its last level from t = 94 to 169: a third closer to the
reference, visibly smoother, FID 5.03 against 3.78).
With a second set of held-out draws (`check`), the result is whichever of the start, the best window and the
refined levels lands closest on that set: a fit that does not carry over to other noise keeps the start.

Fitting levels to a model is the idea of Sabour et al. 2024 (Align Your Steps, which minimises a bound on the KL
divergence) and of Chen et al. 2024 (GITS, a dynamic program over first-order steps); this fits the sampler's own
S-step output directly, so it suits multistep solvers as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..schedules import Schedule, _nearest_timesteps, spaced_timesteps, window_timesteps
from . import SAMPLERS

REFERENCE_SAMPLER = "unipc-3"  # the reference solve: every ODE sampler converges to the same solution
REFERENCE_FACTOR = 4  # the reference takes at least this many times the tuned steps: it must be the far better solve

# the grid: window tops and bottoms (sigma_min = c / steps^2) and exponents (None: log-uniform)
TOPS = (10.0, 20.0, 40.0, 80.0, 160.0)
BOTTOM_CS = (1.0, 2.0, 4.0, 8.0)
RHOS = (None, -4.0, -7.0, -10.0, 7.0)
MOVES = (0.5, 0.25, 0.125)  # then steps in log sigma, tried in turn: half an e-fold down to an eighth of one


@dataclass(frozen=True)
class TunedTimesteps:
    """The chosen timesteps (decreasing, the first the start's), the start's, their errors against the reference
    (mean L2 distance per sample) on the fitted draws and on the check draws (nan without them), and the S-step
    solves the search ran (its cost: trials x S network evaluations)."""

    timesteps: tuple[int, ...]
    start: tuple[int, ...]
    error_start: float
    error: float
    trials: int
    check_start: float = math.nan
    check: float = math.nan


def reference_steps_for(steps: int, reference_steps: int, T: int) -> int:
    """Steps of the reference solve when tuning `steps`: reference_steps, or REFERENCE_FACTOR x steps if more, at
    most T. (On the oracle mixtures, 50 steps tuned against a 100-step reference fitted the reference's own error
    and ended 2x further from the exact ODE than auto's.)"""
    return min(T, max(reference_steps, REFERENCE_FACTOR * steps))


def sample_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over samples of the L2 distance between x and the reference, (B, ...) each; inf if x is not finite."""
    if not torch.isfinite(x).all():
        return math.inf
    return (x.double() - reference.double()).flatten(1).norm(dim=1).mean().item()


def grid_candidates(schedule: Schedule, steps: int) -> list[tuple[int, ...]]:
    """The distinct timesteps of the grid's windows that keep all `steps` levels (none merged), in grid order."""
    out: dict[tuple[int, ...], None] = {}
    for top in TOPS:
        for c in BOTTOM_CS:
            for rho in RHOS:
                try:
                    ts = tuple(int(t) for t in window_timesteps(schedule, steps, top, c / steps**2, rho))
                except ValueError:  # a window above or below every level of this schedule
                    continue
                if len(ts) == steps:
                    out[ts] = None
    return list(out)


def tune_timesteps(solve: Callable[[torch.Tensor], torch.Tensor], schedule: Schedule, start: torch.Tensor,
                   reference: torch.Tensor, *, check: tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]
                   | None = None, max_trials: int = 150, moves: tuple[float, ...] = MOVES, grid: bool = True,
                   progress: bool = False) -> TunedTimesteps:
    """The timesteps (as many as `start`, decreasing ints in [1, T], the first kept) whose solve is closest to the
    reference: the start, then (grid=True) every window of grid_candidates, then coordinate descent.

    solve(timesteps) -> the solution (B, ...) of the held-out noise that `reference` (B, ...) solves with many
    steps. A trial that would merge or reorder levels is skipped unrun. Stops after max_trials solves (the grid
    first: 100 windows at most) or when the smallest move helps nowhere. The last level stays at or below the
    start's. check = (solve, reference) of other draws: the start, the best window and the refined levels are
    scored there (3 more solves) and the closest is kept.
    """
    start_ts = [int(t) for t in start]
    if len(start_ts) < 2:
        raise ValueError("tuning needs at least 2 timesteps (the first stays at the start's)")
    log_sigma = (schedule.sigma / schedule.alpha).log()  # index t = 0..T, increasing in t (-inf at t = 0)
    trials = 0
    bar = tqdm(total=max_trials, desc="tuning", unit="solve", disable=not progress)

    def error(ts: list[int]) -> float:
        nonlocal trials
        trials += 1
        bar.update(1)
        return sample_error(solve(torch.tensor(ts)), reference)

    best_ts, best = start_ts, error(start_ts)
    error_start = best
    tried: set[tuple[int, ...]] = {tuple(start_ts)}

    def allowed(ts) -> bool:
        """Levels decreasing, the first the start's, the last no higher than the start's last."""
        return ts[0] == start_ts[0] and ts[-1] <= start_ts[-1] and all(a > b for a, b in zip(ts, ts[1:]))

    for cand in grid_candidates(schedule, len(start_ts)) if grid else []:
        if trials >= max_trials:
            break
        if cand in tried or not allowed(cand):
            continue
        tried.add(cand)
        e = error(list(cand))
        if e < best:
            best, best_ts = e, list(cand)

    def timesteps_of(lv: list[float]) -> list[int]:
        """The nearest timestep in log sigma to each level after the first (which stays start_ts[0])."""
        ts = _nearest_timesteps(schedule, torch.tensor(lv, dtype=torch.float64).exp())
        return [start_ts[0], *(int(t) for t in ts[1:])]

    stages = {tuple(start_ts): error_start, tuple(best_ts): best}  # the start and the best window: fit errors
    levels = [log_sigma[t].item() for t in best_ts]  # timesteps_of(levels) gives best_ts back
    for move in moves:
        improved = True
        while improved and trials < max_trials:
            improved = False
            for i in range(1, len(levels)):
                for sign in (1.0, -1.0):
                    cand = list(levels)
                    cand[i] += sign * move
                    ts = timesteps_of(cand)
                    if trials >= max_trials or tuple(ts) in tried or not allowed(ts):
                        continue
                    tried.add(tuple(ts))
                    e = error(ts)
                    if e < best:
                        best, best_ts, levels, improved = e, ts, cand, True
                        break
    bar.close()
    stages[tuple(best_ts)] = best
    if check is None:
        return TunedTimesteps(tuple(best_ts), tuple(start_ts), error_start, best, trials)
    check_solve, check_reference = check
    on_check = {ts: sample_error(check_solve(torch.tensor(ts)), check_reference) for ts in stages}
    chosen = min(on_check, key=lambda ts: (on_check[ts], ts != tuple(start_ts)))  # a tie keeps the start
    return TunedTimesteps(chosen, tuple(start_ts), error_start, stages[chosen], trials, on_check[tuple(start_ts)],
                          on_check[chosen])


def tune_solver(solver: Callable[..., torch.Tensor], denoise: Callable, schedule: Schedule, start: torch.Tensor,
                fit_noise: torch.Tensor, check_noise: torch.Tensor, *, reference_steps: int = 100,
                max_trials: int = 150, progress: bool = False) -> TunedTimesteps:
    """`ddpmlab tune`'s fit for any denoiser: solver(denoise, x_T, schedule, timesteps) -> x_0 (a sampler with its
    options bound) is fitted on fit_noise and checked on check_noise, each against REFERENCE_SAMPLER's solve with
    reference_steps_for(len(start), reference_steps, T) steps uniform in log-SNR (tune_timesteps)."""
    fine = spaced_timesteps(schedule, reference_steps_for(len(start), reference_steps, schedule.T), "logsnr")
    reference = SAMPLERS[REFERENCE_SAMPLER](denoise, fit_noise, schedule, fine)
    check = (partial(solver, denoise, check_noise, schedule),
             SAMPLERS[REFERENCE_SAMPLER](denoise, check_noise, schedule, fine))
    return tune_timesteps(partial(solver, denoise, fit_noise, schedule), schedule, start, reference, check=check,
                          max_trials=max_trials, progress=progress)


__all__ = ["BOTTOM_CS", "MOVES", "REFERENCE_FACTOR", "REFERENCE_SAMPLER", "RHOS", "TOPS", "TunedTimesteps",
           "grid_candidates", "reference_steps_for", "sample_error", "tune_solver", "tune_timesteps"]

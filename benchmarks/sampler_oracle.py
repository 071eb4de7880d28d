"""Every ODE sampler x spacing x NFE on a family of Gaussian mixtures, against the exact probability-flow ODE.

The exact denoiser of a Gaussian mixture is closed-form, so no training is involved: each sampler starts from
the same x_T and is compared with the exact ODE solution from that x_T (RK4 in the variance-exploding variable
x / alpha, in log sigma, checked to 1e-6 by halving the step). Also reported: the energy distance to fresh data
(as a multiple of the real-vs-real floor) and the modes kept (components that receive at least half their weight).
diffusers' schedulers run on the same oracle and schedule as the reference (when diffusers is installed).

    python benchmarks/sampler_oracle.py [--n 1000] [--nfe 5,8,10,15,20,50] [--out benchmarks/results]

Writes sampler_oracle.json and sampler_oracle.md (the full table) into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from ddpmlab.runtime import keep_freed_memory
from ddpmlab.samplers import SAMPLERS
from ddpmlab.samplers.oracle import GaussianMixture, energy_distance, oracle_denoiser
from ddpmlab.schedules import SPACINGS, make_schedule, spaced_timesteps

ODE_SAMPLERS = ("ddim", "dpmpp-2m", "dpmpp-3m", "euler", "heun")
SCHED = make_schedule("linear", 1000)


def mixtures() -> dict[str, GaussianMixture]:
    """Narrow and wide, equal and unequal weights, centred and off-centre, isotropic and anisotropic, 2-D and 64-D."""
    g = torch.Generator().manual_seed(0)
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    ring = lambda k, r, s: GaussianMixture.ring(k, r, s)  # noqa: E731
    off = t(1.0, -0.5) + 1.2 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    aniso_means = t(0.8, 0.3) + torch.randn(3, 2, generator=g, dtype=torch.float64)
    m64 = 0.5 + torch.randn(5, 64, generator=g, dtype=torch.float64)
    a64 = torch.randn(3, 64, generator=g, dtype=torch.float64)
    a64_std = torch.exp(torch.empty(3, 64, dtype=torch.float64).uniform_(math.log(0.02), math.log(0.5), generator=g))
    return {
        "narrow-unequal-offcentre-2d": GaussianMixture(off, t(0.02, 0.05, 0.1, 0.03, 0.2, 0.08),
                                                       t(0.4, 0.05, 0.2, 0.1, 0.15, 0.1)),
        "narrow-equal-centred-2d": ring(8, 2.0, 0.05),
        "wide-equal-centred-2d": ring(4, 1.5, 0.5),
        "anisotropic-unequal-2d": GaussianMixture(aniso_means, t(0.5, 0.03, 0.02, 0.4, 0.1, 0.1).reshape(3, 2),
                                                  t(0.6, 0.3, 0.1)),
        "unequal-offcentre-64d": GaussianMixture(m64, t(0.05, 0.3, 0.1, 0.2, 0.08), t(0.35, 0.25, 0.2, 0.1, 0.1)),
        "anisotropic-64d": GaussianMixture(a64, a64_std, t(0.5, 0.3, 0.2)),
    }


def exact_ode(mix: GaussianMixture, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """RK4 on dx/du = x - D(x; e^u), u = log sigma, x = x_t / alpha_t, from sigma_T down to 1e-6; returns x_0."""
    a_T, s_T = SCHED.alpha[-1].item(), SCHED.sigma[-1].item()
    x, u0, u1 = x_T / a_T, math.log(s_T / a_T), math.log(1e-6)
    h = (u1 - u0) / steps
    one = torch.ones(x.shape[0], 1, dtype=torch.float64)

    def f(x: torch.Tensor, u: float) -> torch.Tensor:
        return x - mix.posterior(x, one, one * math.exp(u)).x0

    for i in range(steps):
        u = u0 + i * h
        k1 = f(x, u)
        k2 = f(x + 0.5 * h * k1, u + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, u + 0.5 * h)
        k4 = f(x + h * k3, u + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return mix.posterior(x, one, one * 1e-6).x0


def modes_kept(mix: GaussianMixture, x: torch.Tensor) -> int:
    """Components whose share of the samples (by nearest responsibility at tiny noise) is >= half their weight."""
    one = torch.ones(x.shape[0], 1, dtype=torch.float64)
    a, s2 = one[:, :, None], mix._stds_kd().pow(2)[None] + 1e-4
    resid = x[:, None, :] - mix.means[None]
    k = (mix.weights.log()[None] - 0.5 * (resid.pow(2) / (a * s2) + s2.log()).sum(-1)).argmax(1)
    share = torch.bincount(k, minlength=len(mix.weights)).double() / len(x)
    return int((share >= 0.5 * mix.weights).sum())


def steps_for(sampler: str, nfe: int) -> int:
    """Sampler steps that spend at most `nfe` network evaluations (Heun: 2 steps - 1)."""
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def diffusers_configs():
    """(name, scheduler class name, kwargs) for diffusers' solvers of the same ODE, as their users set them."""
    out = []
    for spacing in ("linspace", "trailing", "leading"):
        for karras in (False, True):
            k = "+karras" if karras else ""
            for order in (2, 3):
                out.append((f"dpm++{order}m/{spacing}{k}", "DPMSolverMultistepScheduler",
                            dict(solver_order=order, timestep_spacing=spacing, use_karras_sigmas=karras)))
                out.append((f"unipc{order}/{spacing}{k}", "UniPCMultistepScheduler",
                            dict(solver_order=order, timestep_spacing=spacing, use_karras_sigmas=karras)))
        out.append((f"ddim/{spacing}", "DDIMScheduler", dict(timestep_spacing=spacing, clip_sample=False)))
    return out


def run_diffusers(cls_name: str, kwargs: dict, mix: GaussianMixture, x_T: torch.Tensor, nfe: int) -> torch.Tensor:
    """diffusers' scheduler loop with the oracle as its eps model (its timestep k is our t = k + 1)."""
    import diffusers

    sched = getattr(diffusers, cls_name)(num_train_timesteps=1000, trained_betas=SCHED.betas[1:].numpy(), **kwargs)
    sched.set_timesteps(nfe)
    oracle = oracle_denoiser(mix, SCHED)
    x = x_T.clone()
    for k in sched.timesteps:
        t = torch.full((x.shape[0],), int(round(float(k))) + 1, dtype=torch.long)
        x = sched.step(oracle(x, t).eps, k, x).prev_sample.to(torch.float64)
    return x


def score(mix: GaussianMixture, out: torch.Tensor, exact: torch.Tensor, fresh: torch.Tensor, floor: float) -> dict:
    ok = bool(torch.isfinite(out).all())
    return {
        "ode_error": (out - exact).norm(dim=1).mean().item() if ok else math.inf,
        "energy_x_floor": energy_distance(out, fresh) / floor if ok else math.inf,
        "modes": modes_kept(mix, out) if ok else 0,
    }


def measure(name: str, mix: GaussianMixture, n: int, nfes: list[int], with_diffusers: bool) -> dict:
    x_T = torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact, finer = exact_ode(mix, x_T, 2000), exact_ode(mix, x_T, 4000)
    g = torch.Generator().manual_seed(2)
    fresh, other = mix.sample(n, g), mix.sample(n, g)
    floor = energy_distance(other, fresh)
    rows = []
    for sampler in ODE_SAMPLERS:
        for spacing in SPACINGS:
            for nfe in nfes:
                ts = spaced_timesteps(SCHED, steps_for(sampler, nfe), spacing)
                out = SAMPLERS[sampler](oracle_denoiser(mix, SCHED), x_T, SCHED, ts)
                used = 2 * len(ts) - 1 if sampler == "heun" else len(ts)
                rows.append({"side": "ddpmlab", "sampler": sampler, "spacing": spacing, "nfe": nfe,
                             "nfe_used": used, **score(mix, out, exact, fresh, floor)})
    if with_diffusers:
        for label, cls_name, kwargs in diffusers_configs():
            for nfe in nfes:
                out = run_diffusers(cls_name, kwargs, mix, x_T, nfe)
                rows.append({"side": "diffusers", "sampler": label.split("/")[0], "spacing": label.split("/")[1],
                             "nfe": nfe, "nfe_used": nfe, **score(mix, out, exact, fresh, floor)})
    return {"mixture": name, "dim": mix.dim, "components": len(mix.weights), "floor": floor,
            "reference_check": (exact - finer).abs().max().item(), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--nfe", default="5,8,10,15,20,50")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--no-diffusers", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    nfes = [int(v) for v in args.nfe.split(",")]
    try:
        import diffusers  # noqa: F401

        with_diffusers = not args.no_diffusers
    except ImportError:
        with_diffusers = False
    results, t0 = [], time.perf_counter()
    for name, mix in mixtures().items():
        results.append(measure(name, mix, args.n, nfes, with_diffusers))
        print(f"{name}: reference checked to {results[-1]['reference_check']:.1e} ({time.perf_counter() - t0:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampler_oracle.json").write_text(json.dumps({"n": args.n, "nfe": nfes, "results": results}, indent=1))
    print(f"wrote {out / 'sampler_oracle.json'}")


if __name__ == "__main__":
    main()

"""Every ODE sampler x spacing x NFE on a family of Gaussian mixtures, against the exact probability-flow ODE.

The exact denoiser of a Gaussian mixture is closed-form, so no training is involved: each sampler starts from
the same x_T and is compared with the exact ODE solution from that x_T (RK4 in the variance-exploding variable
x / alpha, in log sigma, checked to 1e-6 by halving the step). Also reported: the energy distance to fresh data
(as a multiple of the real-vs-real floor) and the modes kept (components that receive at least half their weight).
diffusers' schedulers run on the same oracle and schedule as the reference (when diffusers is installed).

    python benchmarks/sampler_oracle.py [--n 1000] [--nfe 5,8,10,15,20,50] [--schedule linear|cosine]
                                        [--mixtures NAME,...] [--samplers NAME,...] [--spacings NAME,...]
                                        [--reuse] [--no-diffusers] [--held-out] [--out benchmarks/results]

Writes sampler_oracle.json (sampler_oracle_cosine.json under cosine) into --out after each mixture;
benchmarks/sampler_table.py makes the tables. --reuse keeps the rows of the existing file that this run does not
measure (diffusers' side included, which is then run only for mixtures that have none) and its reference check.

--held-out measures a mixture that played no part in choosing `auto` instead of the six: fashion-mnist-pca-784d, the
ten Fashion-MNIST classes as Gaussian components (each class's mean and per-direction spread in the principal axes
of the training images, weights the class frequencies). Unlike the six low-dimensional mixtures it has the spread
of an image over scales: standard deviations from 8.9 along the first axis to 0.16 along the 400th and 6e-4 along
the last. It needs the dataset (apt-get install dataset-fashion-mnist) and writes sampler_held_out.json
(sampler_held_out_cosine.json), apart from the files `auto` is chosen from; at 784 dimensions --n 300 keeps a
schedule to about half an hour.
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

ODE_SAMPLERS = ("ddim", "dpmpp-2m", "dpmpp-3m", "unipc-2", "unipc-3", "euler", "heun")
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


def held_out_mixtures() -> dict[str, GaussianMixture]:
    """Fashion-MNIST's classes in the principal axes of its training images (the module docstring says why)."""
    from ddpmlab.config import DataConfig
    from ddpmlab.data import load_dataset

    data = load_dataset(DataConfig(name="fashion-mnist"), "train")
    x, y = data.x.reshape(len(data.x), -1).to(torch.float64), data.y
    centred = x - x.mean(0)
    axes = torch.linalg.svd(centred, full_matrices=False).Vh  # rows: principal directions
    z = centred @ axes.T
    classes = range(data.num_classes)
    means = torch.stack([z[y == c].mean(0) for c in classes])
    stds = torch.stack([z[y == c].std(0) for c in classes]).clamp_min(1e-3)
    weights = torch.bincount(y, minlength=data.num_classes).to(torch.float64)
    return {"fashion-mnist-pca-784d": GaussianMixture(means, stds, weights)}


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


def run_diffusers(cls_name: str, kwargs: dict, mix: GaussianMixture, x_T: torch.Tensor, nfe: int,
                  own_sigmas: bool = False) -> torch.Tensor:
    """diffusers' scheduler loop with the oracle as its eps model (its timestep k is our t = k + 1), or with
    `own_sigmas` the oracle at the noise level sigma / alpha the scheduler integrates with (its `sigmas`; Karras
    sigmas fall between trained timesteps)."""
    import diffusers

    sched = getattr(diffusers, cls_name)(num_train_timesteps=1000, trained_betas=SCHED.betas[1:].numpy(), **kwargs)
    sched.set_timesteps(nfe)
    oracle = oracle_denoiser(mix, SCHED)
    x = x_T.clone()
    for i, k in enumerate(sched.timesteps):
        if own_sigmas:
            alpha = torch.full((x.shape[0], 1), (1.0 + float(sched.sigmas[i]) ** 2) ** -0.5, dtype=torch.float64)
            eps = mix.posterior(x, alpha, alpha * float(sched.sigmas[i])).eps
        else:
            eps = oracle(x, torch.full((x.shape[0],), int(round(float(k))) + 1, dtype=torch.long)).eps
        x = sched.step(eps, k, x).prev_sample.to(torch.float64)
    return x


def score(mix: GaussianMixture, out: torch.Tensor, exact: torch.Tensor, fresh: torch.Tensor, floor: float) -> dict:
    ok = bool(torch.isfinite(out).all())
    return {
        "ode_error": (out - exact).norm(dim=1).mean().item() if ok else math.inf,
        "energy_x_floor": energy_distance(out, fresh) / floor if ok else math.inf,
        "modes": modes_kept(mix, out) if ok else 0,
    }


def measure(name: str, mix: GaussianMixture, n: int, nfes: list[int], samplers: list[str], spacings: list[str],
            with_diffusers: bool, old: dict | None = None) -> dict:
    """One mixture's rows; `old` (the same mixture from an earlier file) supplies every row not measured here."""
    x_T = torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = exact_ode(mix, x_T, 2000)
    check = old["reference_check"] if old else (exact - exact_ode(mix, x_T, 4000)).abs().max().item()
    g = torch.Generator().manual_seed(2)
    fresh, other = mix.sample(n, g), mix.sample(n, g)
    floor = energy_distance(other, fresh)
    rows = []
    for sampler in samplers:
        for spacing in spacings:
            for nfe in nfes:
                ts = spaced_timesteps(SCHED, steps_for(sampler, nfe), spacing)
                out = SAMPLERS[sampler](oracle_denoiser(mix, SCHED), x_T, SCHED, ts)
                used = 2 * len(ts) - 1 if sampler == "heun" else len(ts)
                rows.append({"side": "ddpmlab", "sampler": sampler, "spacing": spacing, "nfe": nfe,
                             "nfe_used": used, **score(mix, out, exact, fresh, floor)})
    kept = old["rows"] if old else []
    if with_diffusers and not any(r["side"] == "diffusers" for r in kept):
        for label, cls_name, kwargs in diffusers_configs():
            for nfe in nfes:
                try:
                    out = run_diffusers(cls_name, kwargs, mix, x_T, nfe)
                except (IndexError, AssertionError):  # cosine + karras: levels that round to one timestep break
                    # diffusers' step bookkeeping (DPM-Solver++ overruns its sigmas, UniPC asserts order > 0)
                    out = torch.full_like(x_T, math.nan)
                rows.append({"side": "diffusers", "sampler": label.split("/")[0], "spacing": label.split("/")[1],
                             "nfe": nfe, "nfe_used": nfe, **score(mix, out, exact, fresh, floor)})
    new = {(r["side"], r["sampler"], r["spacing"], r["nfe"]) for r in rows}
    rows = [r for r in kept if (r["side"], r["sampler"], r["spacing"], r["nfe"]) not in new] + rows
    return {"mixture": name, "dim": mix.dim, "components": len(mix.weights), "floor": floor,
            "reference_check": check, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--nfe", default="5,8,10,15,20,50")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--no-diffusers", action="store_true")
    ap.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    ap.add_argument("--mixtures", help="comma-separated subset of the mixture names (default: all)")
    ap.add_argument("--samplers", help=f"comma-separated subset of {','.join(ODE_SAMPLERS)} (default: all)")
    ap.add_argument("--spacings", help=f"comma-separated subset of {','.join(SPACINGS)} (default: all)")
    ap.add_argument("--reuse", action="store_true", help="keep the existing file's rows that this run does not measure")
    ap.add_argument("--held-out", action="store_true", help="the held-out image-like mixture instead of the six")
    args = ap.parse_args()
    global SCHED
    SCHED = make_schedule(args.schedule, 1000)
    torch.set_num_threads(1)
    keep_freed_memory()
    nfes = [int(v) for v in args.nfe.split(",")]
    if args.held_out:
        from ddpmlab.errors import DataError

        try:
            chosen = held_out_mixtures()
        except DataError as e:
            raise SystemExit(f"--held-out needs Fashion-MNIST: {e}") from None
    else:
        chosen = mixtures()
    samplers = args.samplers.split(",") if args.samplers else list(ODE_SAMPLERS)
    spacings = args.spacings.split(",") if args.spacings else list(SPACINGS)
    for given, allowed, what in ((args.mixtures.split(",") if args.mixtures else [], chosen, "mixture"),
                                 (samplers, ODE_SAMPLERS, "sampler"), (spacings, SPACINGS, "spacing")):
        unknown = [v for v in given if v not in allowed]
        if unknown:
            raise SystemExit(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if args.mixtures:
        chosen = {k: chosen[k] for k in args.mixtures.split(",")}
    try:
        import diffusers  # noqa: F401

        with_diffusers = not args.no_diffusers
    except ImportError:
        with_diffusers = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name_json = ("sampler_held_out" if args.held_out else "sampler_oracle")  # sampler_oracle*.json: the six only
    name_json += ".json" if args.schedule == "linear" else f"_{args.schedule}.json"
    previous: dict[str, dict] = {}
    if args.reuse and (out / name_json).exists():
        old = json.loads((out / name_json).read_text())
        if old.get("n", args.n) != args.n or old.get("nfe", nfes) != nfes:
            raise SystemExit(f"{out / name_json} has n={old.get('n')}, nfe={old.get('nfe')}; --reuse needs the same "
                             f"--n and --nfe")
        previous = {res["mixture"]: res for res in old["results"]}
    done: dict[str, dict] = {}
    t0 = time.perf_counter()
    for name, mix in chosen.items():
        done[name] = measure(name, mix, args.n, nfes, samplers, spacings, with_diffusers, previous.get(name))
        print(f"{name}: reference checked to {done[name]['reference_check']:.1e} ({time.perf_counter() - t0:.0f} s)")
        order = [*previous, *(k for k in done if k not in previous)]  # a partial run keeps the other mixtures
        results = [done[k] if k in done else previous[k] for k in order]
        (out / name_json).write_text(json.dumps({"n": args.n, "nfe": nfes, "schedule": args.schedule,
                                                 "results": results}, indent=1))
    print(f"wrote {out / name_json}")


if __name__ == "__main__":
    main()

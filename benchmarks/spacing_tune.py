"""Tuned timesteps (`ddpmlab tune`, samplers/tuning.py) on sampler_oracle.py's Gaussian mixtures, both schedules.

For each schedule, mixture, sampler and NFE the levels are fitted as `ddpmlab tune` fits them to a network:
on held-out noise (64 draws to fit and 64 to check, `ddpmlab tune`'s default, of other seeds than the scored
draws), against the same reference (unipc-3, uniform in log-SNR, 100 steps or 4 x NFE) and with the same budget
(at most 150 solves), starting from `auto`'s spacing. The exact ODE solution plays no part in the fit. Both `auto`
and the tuned timesteps are then scored as sampler_oracle.py scores a spacing: the mean L2 error of its 1,000 samples
against the exact probability-flow ODE from the same x_T, as a multiple of diffusers' best of 39 settings for that
mixture, schedule and NFE (read from the oracle JSON files).

    python benchmarks/spacing_tune.py [--samplers unipc-3,dpmpp-2m] [--nfe 5,8,10,15,20,50] [--n 1000]
        [--out benchmarks/results/spacing_tune.json]

Prints, per sampler, schedule and NFE, the worst ratio over the six mixtures for `auto` and for tuned timesteps.
It measures 50 NFE too, which `ddpmlab tune` refuses (more than 20 steps): the fit follows the reference's own error
there, as this column shows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ddpmlab.samplers import SAMPLERS, resolve_spacing
from ddpmlab.samplers.oracle import oracle_denoiser
from ddpmlab.samplers.tuning import sample_error, tune_solver
from ddpmlab.schedules import make_schedule, spaced_timesteps

import sampler_oracle as oracle
from spacing_search import SCHEDULES, diffusers_best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samplers", default="unipc-3,dpmpp-2m")
    ap.add_argument("--nfe", default="5,8,10,15,20,50")
    ap.add_argument("--n", type=int, default=1000, help="scored samples (the first n of sampler_oracle.py's 1,000)")
    ap.add_argument("--tune-samples", type=int, default=64)
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--results", default="benchmarks/results", help="where the oracle JSON files are")
    ap.add_argument("--out", default="benchmarks/results/spacing_tune.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    samplers = [s for s in args.samplers.split(",") if s]
    unknown = [s for s in samplers if s not in oracle.ODE_SAMPLERS or s == "heun"]
    if unknown or not samplers:
        raise SystemExit(f"--samplers {args.samplers}: choose from {', '.join(oracle.ODE_SAMPLERS[:-1])}")
    nfes = [int(v) for v in args.nfe.split(",")]
    if not 1 <= args.n <= 1000:
        raise SystemExit(f"--n {args.n}: choose 1-1000 (sampler_oracle.py's samples)")
    best = diffusers_best(Path(args.results), list(SCHEDULES))
    rows = []
    t0 = time.perf_counter()
    for name in SCHEDULES:
        oracle.SCHED = sched = make_schedule(name, 1000)
        for mix_name, mix in oracle.mixtures().items():
            den = oracle_denoiser(mix, sched)
            x_T = torch.randn(1000, mix.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)[: args.n]
            exact = oracle.exact_ode(mix, x_T, 2000)
            held, other = (torch.randn(args.tune_samples, mix.dim, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64) for seed in (7, 8))
            for sampler in samplers:
                run = SAMPLERS[sampler]
                for nfe in nfes:
                    spacing = resolve_spacing(sampler, "auto", nfe, sched.T)
                    start = spaced_timesteps(sched, nfe, spacing)
                    tuned = tune_solver(run, den, sched, start, held, other, max_trials=args.trials)
                    d = best[(name, mix_name, nfe)]
                    err_auto = sample_error(run(den, x_T, sched, start), exact)
                    err_tuned = sample_error(run(den, x_T, sched, torch.tensor(tuned.timesteps)), exact)
                    rows.append({"schedule": name, "mixture": mix_name, "sampler": sampler, "nfe": nfe,
                                 "auto_spacing": spacing, "diffusers_best": d, "auto": err_auto, "tuned": err_tuned,
                                 "timesteps": list(tuned.timesteps), "trials": tuned.trials,
                                 "fit": [tuned.error_start, tuned.error],
                                 "check": [tuned.check_start, tuned.check]})
            print(f"{name} {mix_name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "tune_samples": args.tune_samples, "trials": args.trials,
                               "rows": rows}, indent=1) + "\n")
    print("\nworst ratio over the mixtures to diffusers' best, auto -> tuned")
    print("| sampler | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---|---|" + "---|" * len(nfes))
    for sampler in samplers:
        for name in SCHEDULES:
            cells = []
            for nfe in nfes:
                rs = [r for r in rows if (r["sampler"], r["schedule"], r["nfe"]) == (sampler, name, nfe)]
                a = max(r["auto"] / r["diffusers_best"] for r in rs)
                t = max(r["tuned"] / r["diffusers_best"] for r in rs)
                cells.append(f"{a:.2f} -> {'**' if t <= 1 else ''}{t:.2f}{'**' if t <= 1 else ''}")
            print(f"| `{sampler}` | {name} | " + " | ".join(cells) + " |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

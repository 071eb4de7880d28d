"""A search over few-step spacings for one sampler on sampler_oracle.py's Gaussian mixtures, both schedules.

Each candidate places `steps` noise levels sigma = sigma_t / alpha_t (the first forced to t = T, as every spacing
does) by Karras et al. 2022, eq. 5 with exponent rho (log-uniform when rho is "log"), from min(top, sigma at T) down
to max(sigma at t = 1, c / steps^p), and is scored as sampler_oracle.py scores a spacing: the mean L2 error of each
sample against the exact probability-flow ODE from the same x_T, as a multiple of diffusers' best of 39 settings for
that mixture, schedule and NFE (read from the oracle JSON files, which must hold diffusers' rows). One line of JSON
per candidate and NFE: the twelve ratios (six mixtures under linear, then under cosine; `--schedules` keeps one)
and their maximum.

    python benchmarks/spacing_search.py [--sampler unipc-3] [--nfe 5,8,10,15,20] [--n 300]
        [--tops 80,40,20] [--cs 1,2,3,4,6,8,16] [--ps 2,1.5] [--rhos log,15,7,-3,-4,-5,-7,-10,-15]
        [--schedules linear,cosine] [--out benchmarks/results/spacing_search.jsonl]

--n takes the first n samples of sampler_oracle.py's 1,000 (the ratios are against diffusers' error over all 1,000),
so the search is a screen: for the candidate kept as rho-window the worst ratio at 5 / 8 / 10 / 20 NFE was 1.24 /
1.22 / 1.20 / 1.36 on 300 samples and 1.32 / 1.08 / 0.96 / 1.34 on all 1,000 (sampler_oracle.py). Check a pick
there. The closing lines print, per NFE, the best candidates by their worst ratio, and the best single candidate
over all NFE.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import torch

from ddpmlab.samplers import SAMPLERS
from ddpmlab.samplers.oracle import oracle_denoiser
from ddpmlab.schedules import Schedule, make_schedule, window_timesteps

import sampler_oracle as oracle

SCHEDULES = ("linear", "cosine")
FILES = {"linear": "sampler_oracle.json", "cosine": "sampler_oracle_cosine.json"}


def candidate_timesteps(schedule: Schedule, steps: int, top: float, c: float, p: float, rho: float | None):
    return window_timesteps(schedule, steps, top, c / steps**p, rho)


def diffusers_best(results: Path, schedules: list[str]) -> dict[tuple[str, str, int], float]:
    best: dict[tuple[str, str, int], float] = {}
    for name in schedules:
        path = results / FILES[name]
        if not path.exists():
            raise SystemExit(f"{path} is missing; run benchmarks/sampler_oracle.py --schedule {name} first")
        for mix in json.loads(path.read_text())["results"]:
            for row in mix["rows"]:
                if row["side"] == "diffusers":
                    key = (name, mix["mixture"], row["nfe"])
                    best[key] = min(best.get(key, math.inf), row["ode_error"])
    if not best:
        raise SystemExit(f"no diffusers rows in {results}; run benchmarks/sampler_oracle.py with diffusers installed")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sampler", default="unipc-3", choices=[s for s in oracle.ODE_SAMPLERS if s != "heun"])
    ap.add_argument("--nfe", default="5,8,10,15,20")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--tops", default="80,40,20")
    ap.add_argument("--cs", default="1,2,3,4,6,8,16")
    ap.add_argument("--ps", default="2,1.5")
    ap.add_argument("--rhos", default="log,15,7,-3,-4,-5,-7,-10,-15")
    ap.add_argument("--schedules", default="linear,cosine", help="comma-separated: linear, cosine or both")
    ap.add_argument("--results", default="benchmarks/results", help="where the oracle JSON files are")
    ap.add_argument("--out", default="benchmarks/results/spacing_search.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    nfes = [int(v) for v in args.nfe.split(",")]
    floats = lambda text: [float(v) for v in text.split(",")]  # noqa: E731
    rhos = [None if v == "log" else float(v) for v in args.rhos.split(",")]
    schedules = args.schedules.split(",")
    if not schedules or any(name not in SCHEDULES for name in schedules):
        raise SystemExit(f"--schedules {args.schedules}: choose from {', '.join(SCHEDULES)}")
    if not 1 <= args.n <= 1000:
        raise SystemExit(f"--n {args.n}: choose 1-1000 (sampler_oracle.py's samples)")
    best = diffusers_best(Path(args.results), schedules)
    missing = [(name, nfe) for name in schedules for nfe in nfes if not any(k[0] == name and k[2] == nfe for k in best)]
    if missing:
        raise SystemExit(f"the oracle files have no diffusers rows for (schedule, NFE) {missing}; run "
                         f"benchmarks/sampler_oracle.py --nfe with those counts first")
    mixtures = oracle.mixtures()
    cases = []  # (schedule name, Schedule, mixture name, mixture, x_T, exact)
    t0 = time.perf_counter()
    for name in schedules:
        oracle.SCHED = make_schedule(name, 1000)
        for mix_name, mix in mixtures.items():
            x_T = torch.randn(1000, mix.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            x_T = x_T[: args.n]
            cases.append((name, oracle.SCHED, mix_name, mix, x_T, oracle.exact_ode(mix, x_T, 2000)))
    print(f"exact ODE solutions of {len(cases)} cases ({time.perf_counter() - t0:.0f} s)", flush=True)
    sampler = SAMPLERS[args.sampler]
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    with out_path.open("w") as out:
        for nfe in nfes:
            for top, c, p, rho in itertools.product(floats(args.tops), floats(args.cs), floats(args.ps), rhos):
                ratios = []
                for name, sched, mix_name, mix, x_T, exact in cases:
                    ts = candidate_timesteps(sched, nfe, top, c, p, rho)
                    x = sampler(oracle_denoiser(mix, sched), x_T, sched, ts)
                    err = (x - exact).norm(dim=1).mean().item() if torch.isfinite(x).all() else math.inf
                    ratios.append(err / best[(name, mix_name, nfe)])
                rec = {"sampler": args.sampler, "nfe": nfe, "top": top, "c": c, "p": p,
                       "rho": "log" if rho is None else rho, "ratios": [round(r, 4) for r in ratios],
                       "worst": max(ratios)}
                records.append(rec)
                out.write(json.dumps(rec) + "\n")
                out.flush()
            print(f"NFE {nfe} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    key = lambda r: (r["top"], r["c"], r["p"], r["rho"])  # noqa: E731
    for nfe in nfes:
        ranked = sorted((r for r in records if r["nfe"] == nfe), key=lambda r: r["worst"])[:3]
        print(f"NFE {nfe}: " + "; ".join(f"top {r['top']:g} c {r['c']:g} p {r['p']:g} rho {r['rho']}: "
                                         f"{r['worst']:.2f}" for r in ranked))
    by_setting: dict[tuple, list[float]] = {}
    for r in records:
        by_setting.setdefault(key(r), []).append(r["worst"])
    setting, worsts = min(by_setting.items(), key=lambda kv: max(kv[1]))
    print(f"best single setting over NFE {args.nfe}: top {setting[0]:g} c {setting[1]:g} p {setting[2]:g} "
          f"rho {setting[3]}: worst {', '.join(f'{w:.2f}' for w in worsts)}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()

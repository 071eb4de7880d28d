"""One oracle mixture's error against the exact ODE at every NFE of a range: a diffusers setting beside ddpmlab's.

sampler_oracle.py measures NFE 5, 8, 10, 15, 20 and 50. A cell where one side is far ahead of its own neighbours is
a cancellation of errors rather than a better solver; this prints the curve around such a cell, on the same x_T:

    python benchmarks/oracle_curve.py [--mixture narrow-equal-centred-2d] [--schedule linear] [--nfe 14-26]
        [--diffusers unipc2/linspace+karras] [--ours unipc-3/logsnr-window,unipc-3/rho-window]

--diffusers names one of sampler_oracle.py's 39 settings as its JSON does (solver/spacing[+karras]). The column
"its own sigmas" runs the same setting with the oracle asked at the noise level the scheduler integrates with
(sigma / alpha from its `sigmas`; Karras sigmas fall between trained timesteps) instead of at the rounded trained
timestep, as sampler_oracle.py does (DPM-Solver and UniPC settings; "-" for DDIM, which keeps no sigmas): where both
show the same dip, the dip is the solver's and not the rounding's.
"""

from __future__ import annotations

import argparse

import torch

from ddpmlab.samplers import SAMPLERS
from ddpmlab.samplers.oracle import oracle_denoiser
from ddpmlab.samplers.tuning import sample_error
from ddpmlab.schedules import make_schedule, spaced_timesteps

import sampler_oracle as oracle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixture", default="narrow-equal-centred-2d")
    ap.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    ap.add_argument("--nfe", default="14-26", help="FIRST-LAST")
    ap.add_argument("--diffusers", default="unipc2/linspace+karras")
    ap.add_argument("--ours", default="unipc-3/logsnr-window,unipc-3/rho-window", help="SAMPLER/SPACING,...")
    args = ap.parse_args()
    mixtures = oracle.mixtures()
    if args.mixture not in mixtures:
        raise SystemExit(f"--mixture {args.mixture}: choose one of {', '.join(mixtures)}")
    settings = {label: (cls, kw) for label, cls, kw in oracle.diffusers_configs()}
    if args.diffusers not in settings:
        raise SystemExit(f"--diffusers {args.diffusers}: choose one of {', '.join(settings)}")
    ours = [tuple(v.split("/")) for v in args.ours.split(",") if v]
    if any(len(v) != 2 or v[0] not in SAMPLERS for v in ours):
        raise SystemExit(f"--ours {args.ours}: give SAMPLER/SPACING pairs, e.g. unipc-3/logsnr-window")
    try:
        first, last = (int(v) for v in args.nfe.split("-"))
    except ValueError:
        raise SystemExit(f"--nfe {args.nfe}: give FIRST-LAST, e.g. 14-26") from None
    torch.set_num_threads(1)
    oracle.SCHED = sched = make_schedule(args.schedule, 1000)
    mix = mixtures[args.mixture]
    x_T = torch.randn(1000, mix.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = oracle.exact_ode(mix, x_T, 2000)
    den = oracle_denoiser(mix, sched)
    choices = (False,) if settings[args.diffusers][0] == "DDIMScheduler" else (False, True)  # DDIM keeps no sigmas
    print(f"| NFE | diffusers {args.diffusers} | its own sigmas | " + " | ".join(f"{s} {sp}" for s, sp in ours) + " |")
    print("|---|---|---|" + "---|" * len(ours))
    for nfe in range(first, last + 1):
        theirs = [sample_error(oracle.run_diffusers(*settings[args.diffusers], mix, x_T, nfe, own_sigmas), exact)
                  if own_sigmas in choices else None for own_sigmas in (False, True)]
        cells = [sample_error(SAMPLERS[s](den, x_T, sched, spaced_timesteps(sched, nfe, sp)), exact) for s, sp in ours]
        print(f"| {nfe} | " + " | ".join("-" if e is None else f"{e:.4f}" for e in theirs + cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Sample quality vs network evaluations for every sampler, on a trained 2D run (exact metric).

Energy distance between 2,000 samples and 2,000 fresh points of the true distribution, median over
seeds, beside the real-vs-real floor at the same N. Trains the `moons` preset first if RUN is missing.

    python benchmarks/sampler_quality.py [--run runs/moons] [--steps 10,20,50] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ddpmlab.config import build_config
from ddpmlab.data import toy_points
from ddpmlab.sampling import load_run, sample, with_sample_settings
from ddpmlab.samplers import SAMPLERS
from ddpmlab.samplers.oracle import energy_distance
from ddpmlab.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/moons")
    ap.add_argument("--steps", default="10,20,50")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    run_dir = Path(args.run)
    if not (run_dir / "ema.safetensors").exists():
        train(build_config("moons"), run_dir, progress=False)
    run = load_run(run_dir)
    name = run.cfg.data.name
    steps = [int(s) for s in args.steps.split(",")]

    def fresh(seed: int) -> torch.Tensor:
        return toy_points(name, args.n, seed=1000 + seed)[0].double()

    floor = statistics.median(energy_distance(fresh(s), fresh(s + 500)) for s in range(args.seeds))
    rows = []
    for sampler in SAMPLERS:
        for k in steps:
            r = with_sample_settings(run, sampler=sampler, steps=k, spacing="auto")
            t0 = time.perf_counter()
            eds = [energy_distance(sample(with_sample_settings(r, seed=s), args.n).double(), fresh(s))
                   for s in range(args.seeds)]
            nfe = 2 * k - 1 if sampler == "heun" else k
            rows.append({"sampler": sampler, "steps": k, "nfe": nfe, "energy_distance": statistics.median(eds),
                         "ratio_to_floor": statistics.median(eds) / floor,
                         "seconds_per_run": (time.perf_counter() - t0) / args.seeds})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampler_quality.json").write_text(json.dumps({"run": str(run_dir), "floor": floor, "rows": rows}, indent=2))
    print(f"run {run_dir} ({name}, step {run.step}); real-vs-real floor {floor:.5f} at N={args.n}")
    print(f"{'sampler':10s} {'steps':>5s} {'NFE':>4s} {'energy dist':>12s} {'x floor':>8s}")
    for r in rows:
        print(f"{r['sampler']:10s} {r['steps']:5d} {r['nfe']:4d} {r['energy_distance']:12.5f} {r['ratio_to_floor']:8.1f}")


if __name__ == "__main__":
    main()

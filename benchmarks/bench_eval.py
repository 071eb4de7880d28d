"""How long the metric part of a 2,000-sample `ddpmlab eval` takes (sampling excluded), cold and warm cache.

    python benchmarks/bench_eval.py [--run runs/eval-mnist] [--n 2000] [--dataset fashion-mnist]

Cold: reference features computed from the real images (and cached); warm: read from the cache. Then the
features of N samples and FID, KID (100 subsets), precision/recall (k = 3, N x N distances) and the floor.
With --run, the samples come from the run (sampling time reported separately); without, N real training
images with added noise stand in for samples, for the dataset of --dataset. One thread (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a trained image run (default: stand-in samples from real images)")
    ap.add_argument("--dataset", default="mnist-5k", help="without --run: mnist-5k or fashion-mnist")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--sampler", default="dpmpp-2m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/bench_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from ddpmlab.config import build_config
    from ddpmlab.evaluate import Scorer, real_sets
    from ddpmlab.sampling import LoadedRun, load_run, sample, with_sample_settings

    if args.run:
        run = with_sample_settings(load_run(args.run), sampler=args.sampler, steps=args.steps, spacing="auto")
    else:  # a stand-in run object: only its config, item shape and path are used by the scorer
        cfg = build_config("mnist", None, [f'data.name="{args.dataset}"'])
        run = LoadedRun(Path("."), cfg, torch.nn.Identity(), None, (1, 28, 28), (), 0, torch.device("cpu"))  # type: ignore[arg-type]
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        Scorer(run, args.n, "auto", None, 0, Path(cache), print)
        timings["reference_cold_s"] = time.perf_counter() - t
        t = time.perf_counter()
        scorer = Scorer(run, args.n, "auto", None, 0, Path(cache), print)
        timings["reference_warm_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if args.run:
        samples = sample(run, args.n)
    else:
        floor = real_sets(run.cfg.data, 2 * args.n).floor[args.n:]
        samples = (floor + 0.1 * torch.randn(floor.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    timings["sampling_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = scorer.score(samples).to_json()
    timings["sample_features_and_metrics_s"] = time.perf_counter() - t
    timings["metric_part_cold_s"] = timings["reference_cold_s"] + timings["sample_features_and_metrics_s"]
    timings["metric_part_warm_s"] = timings["reference_warm_s"] + timings["sample_features_and_metrics_s"]
    report = {"run": args.run, "dataset": run.cfg.data.name, "n": args.n, "threads": torch.get_num_threads(),
              "timings": {k: round(v, 2) for k, v in timings.items()}, "metrics": metrics, "floor": scorer.floor.to_json()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["timings"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

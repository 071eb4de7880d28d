"""Timestep spacings on trained cosine-schedule networks: `auto`'s choice against the oracle's worst-case pick.

    ddpmlab train --preset fashion-mnist-text --minutes 12 --out runs/fashion-mnist-text
    ddpmlab train --preset emoji-text --minutes 30 --out runs/emoji-text          # optional, for --emoji-run
    python benchmarks/spacing_trained.py --text-run runs/fashion-mnist-text [--emoji-run runs/emoji-text]
    python benchmarks/spacing_trained.py --rows rho-window --text-run runs/fashion-mnist-text --moons-run runs/moons \
        --out benchmarks/results/spacing_trained_rho.json
    python benchmarks/spacing_trained.py --rows tuned --text-run runs/fashion-mnist-text --moons-run runs/moons
    python benchmarks/spacing_trained.py --rows many-steps --text-run runs/fashion-mnist-text --moons-run runs/moons
    python benchmarks/spacing_trained.py --rows rho-window --samplers unipc-3 --steps 5,10 --guidance 0 \
        --text-run runs/fashion-mnist-text --out benchmarks/results/spacing_trained_unguided.json

`sampler_oracle.py` scores solvers against the exact ODE of Gaussian mixtures, where a network makes no error. Taken
on the cosine schedule alone, its worst-case choice would be evenly spaced t (trailing, or linspace for Heun) for
most samplers at few steps. This script asks whether that holds on trained networks: for each (sampler, steps)
below it samples the same seeds with each spacing from a templated text run (`--per-prompt` samples for each of
its 20 held-out phrasings, at the run's guidance) and scores FID and KID in the shipped classifier's features
against the test set, and the classifier's accuracy against the prompt's garment; with --emoji-run, also the
retrieval score (MRR at w = 3, 8 samples for each of 32 prompts) of the `dpmpp-2m` rows. `--rows rho-window` runs
the multistep solvers at 5-20 steps with rho-window beside the spacing `auto` took before it (and trailing for
`unipc-3`) instead (`--samplers` keeps some of them, `--steps` some step counts); `--moons-run` adds a linear-schedule
network (the `moons` preset, T = 100): energy distance of 2,000 samples to fresh points, median of 3 seeds, with the
network evaluations each spacing really takes (at T = 100 levels can merge). `--rows tuned` runs unipc-3 and
dpmpp-2m at 5-20 steps with auto's spacing and with `ddpmlab tune`'s timesteps (tuned for each row first, with the
prompts and guidance the row samples with, into the run's timesteps.json). `--rows many-steps` runs unipc-3 at 30
and 50 steps with logsnr and with quadratic levels; `--guidance W` samples the text run at weight W instead of its
own. Results: benchmarks/RESULTS.md, sections 5 and 5b-5d; JSON: --out (by default by --rows: spacing_trained.json,
spacing_trained_rho.json, spacing_trained_tuned.json or spacing_trained_many_steps.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROWS = (  # (sampler, steps, spacings): auto's choice first
    ("dpmpp-2m", 10, ("logsnr-window", "trailing", "karras")),
    ("dpmpp-2m", 20, ("logsnr-window", "trailing", "karras")),
    ("unipc-3", 5, ("logsnr-window", "trailing")),
    ("unipc-2", 10, ("logsnr-window", "trailing")),
    ("ddim", 20, ("quadratic", "trailing")),
    ("heun", 10, ("quadratic", "linspace")),
)
RHO_ROWS = (  # rho-window beside the spacings auto took before it (and trailing for unipc-3)
    *(("unipc-3", steps, ("logsnr-window", "trailing", "rho-window")) for steps in (5, 8, 10, 15, 20)),
    *(("unipc-2", steps, ("logsnr-window" if steps <= 17 else "quadratic", "rho-window"))
      for steps in (5, 8, 10, 15, 20)),
    *(("dpmpp-2m", steps, ("logsnr-window", "rho-window")) for steps in (5, 8, 10, 15, 20)),
    *(("dpmpp-3m", steps, ("trailing" if steps <= 9 else "logsnr-window", "rho-window"))
      for steps in (5, 8, 10, 15, 20)),
)

MANY_STEP_ROWS = (  # unipc-3 beyond 30 steps: the six mixtures' quadratic against logsnr (README, held-out mixture)
    ("unipc-3", 30, ("logsnr-window", "quadratic")),
    ("unipc-3", 50, ("quadratic", "logsnr")),
)

TUNED_ROWS = (  # `ddpmlab tune`'s timesteps beside auto's (section 5d)
    *(("unipc-3", steps, ("auto", "tuned")) for steps in (5, 8, 10, 15, 20)),
    *(("dpmpp-2m", steps, ("auto", "tuned")) for steps in (5, 8, 10, 20)),
)


# --rows NAME: (its rows, the JSON file it writes unless --out is given)
ROW_SETS = {
    "auto-vs-oracle": (ROWS, "benchmarks/results/spacing_trained.json"),
    "rho-window": (RHO_ROWS, "benchmarks/results/spacing_trained_rho.json"),
    "tuned": (TUNED_ROWS, "benchmarks/results/spacing_trained_tuned.json"),
    "many-steps": (MANY_STEP_ROWS, "benchmarks/results/spacing_trained_many_steps.json"),
}


def tune_row(run, prompts=None) -> dict[str, float]:
    """Tune run.cfg.sample's sampler and steps as `ddpmlab tune` does (with these prompts) into the run directory;
    what it found and how long it took."""
    from ddpmlab.prompting import with_prompts
    from ddpmlab.sampling import save_tuned, tune, with_sample_settings

    run = with_sample_settings(with_prompts(run, prompts) if prompts else run, spacing="auto")
    t = time.perf_counter()
    r = tune(run, samples=64, reference_steps=100)  # `ddpmlab tune`'s defaults
    save_tuned(run, r, samples=64, reference_steps=100)
    seconds = time.perf_counter() - t
    print(f"tuned {run.cfg.sample.sampler} at {run.cfg.sample.steps} steps in {seconds:.0f} s: check "
          f"{r.check_start:.4g} -> {r.check:.4g}, timesteps {list(r.timesteps)}", flush=True)
    return {"tune_seconds": seconds, "timesteps": list(r.timesteps), "check": [r.check_start, r.check]}


def templated(run_dir: str, per_prompt: int, rows=ROWS, guidance: float | None = None) -> dict[str, dict[str, float]]:
    from ddpmlab.evaluate import Scorer, default_cache_dir
    from ddpmlab.metrics.alignment import _classify, eval_prompts
    from ddpmlab.sampling import load_run, sample, with_sample_settings

    base = load_run(run_dir)
    if guidance is not None:
        base = with_sample_settings(base, guidance=guidance)
    prompts, classes = eval_prompts(base)
    want = torch.tensor(classes).repeat_interleave(per_prompt)
    scorer = Scorer(base, len(want), "auto", None, 0, default_cache_dir(), print)
    out = {}
    for sampler, steps, spacings in rows:
        for spacing in spacings:
            run = with_sample_settings(base, sampler=sampler, steps=steps, spacing=spacing, seed=0)
            tuned = tune_row(run, prompts) if spacing == "tuned" else {}
            t = time.perf_counter()
            x = sample(run, len(want), prompts=prompts)
            m = scorer.score(x).to_json()
            acc = float((_classify(base.cfg.data.name, x) == want).float().mean())
            out[f"{sampler}/{steps}/{spacing}"] = {"fid": m["fid"], "kid": m["kid"], "accuracy": acc, **tuned}
            print(f"{sampler} {steps} steps {spacing}: FID {m['fid']:.3f}, KID {m['kid']:.5f}, accuracy {acc:.3f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
    return out


def retrieval(run_dir: str) -> dict[str, dict[str, float]]:
    from ddpmlab.metrics.alignment import retrieval_alignment
    from ddpmlab.sampling import load_run, with_sample_settings

    base = load_run(run_dir)
    out = {}
    for sampler, steps, spacings in (row for row in ROWS if row[0] == "dpmpp-2m"):
        for spacing in spacings:
            row = retrieval_alignment(with_sample_settings(base, sampler=sampler, steps=steps, spacing=spacing,
                                                           seed=0), [3.0], 8)["rows"][0]
            out[f"{sampler}/{steps}/{spacing}"] = {k: row[k] for k in ("mrr", "top1", "top5")}
            print(f"emoji {sampler} {steps} steps {spacing}: MRR {row['mrr']:.3f}", flush=True)
    return out


def moons(run_dir: str, rows) -> dict[str, dict[str, float]]:
    import statistics

    from ddpmlab.data import toy_points
    from ddpmlab.samplers.oracle import energy_distance
    from ddpmlab.sampling import load_run, sample, timesteps_of, with_sample_settings

    base = load_run(run_dir)
    fresh = [toy_points(base.cfg.data.name, 2000, seed=1000 + s)[0].double() for s in range(3)]
    floor = statistics.median(energy_distance(fresh[s], toy_points(base.cfg.data.name, 2000, seed=1500 + s)[0].double())
                              for s in range(3))
    out = {"floor": {"energy_distance": floor}}
    for sampler, steps, spacings in rows:
        for spacing in spacings:
            run = with_sample_settings(base, sampler=sampler, steps=steps, spacing=spacing)
            tuned = tune_row(run) if spacing == "tuned" else {}
            ed = statistics.median(energy_distance(sample(with_sample_settings(run, seed=s), 2000).double(), fresh[s])
                                   for s in range(3))
            nfe = len(timesteps_of(run))
            out[f"{sampler}/{steps}/{spacing}"] = {"energy_distance": ed, "nfe": nfe, **tuned}
            print(f"moons {sampler} {steps} steps {spacing} ({nfe} NFE): energy distance {ed:.5f} "
                  f"({ed / floor:.1f}x floor)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text-run", help="a run of the fashion-mnist-text preset")
    ap.add_argument("--emoji-run", help="a run of the emoji-text preset")
    ap.add_argument("--per-prompt", type=int, default=100, help="samples per held-out phrasing (20 phrasings)")
    ap.add_argument("--moons-run", help="a run of the moons preset (linear schedule)")
    ap.add_argument("--rows", choices=list(ROW_SETS), default="auto-vs-oracle",
                    help="the rows of section 5b; the multistep solvers at 5-20 steps with rho-window beside the "
                         "spacing auto took before it (section 5c); unipc-3 and dpmpp-2m at 5-20 steps with "
                         "`ddpmlab tune`'s timesteps beside auto's (section 5d: tunes each row into the run "
                         "directory's timesteps.json first); or unipc-3 at 30 and 50 steps with logsnr and quadratic "
                         "levels (section 5, the held-out mixture)")
    ap.add_argument("--samplers", help="comma-separated: only the rows of these samplers")
    ap.add_argument("--steps", help="comma-separated: only the rows of these step counts")
    ap.add_argument("--window-top", type=float,
                    help="an experiment: the highest level below t = T of karras, logsnr and the window spacings "
                         "(default 80, EDM's sigma_max)")
    ap.add_argument("--guidance", type=float,
                    help="the text run's guidance weight instead of its own (0: the unguided conditional ODE)")
    ap.add_argument("--out", help="JSON file (default: benchmarks/results/spacing_trained.json, or "
                                  "spacing_trained_rho.json / _tuned.json / _many_steps.json with --rows rho-window / "
                                  "tuned / many-steps)")
    args = ap.parse_args()
    if not (args.text_run or args.moons_run):
        ap.error("give --text-run, --moons-run or both")
    if args.guidance is not None and not args.text_run:
        ap.error("--guidance applies to --text-run only; give --text-run or leave it out")
    if args.guidance is not None and args.guidance < 0:
        ap.error(f"--guidance {args.guidance}: give a weight of 0 or more")
    if args.emoji_run and args.rows != "auto-vs-oracle":
        ap.error(f"--emoji-run scores the rows of section 5b only; leave it out with --rows {args.rows}")
    for given in (args.text_run, args.emoji_run, args.moons_run):
        if given and not (Path(given) / "config.toml").exists():
            ap.error(f"{given} is not a run (no config.toml there); train it first, see this script's help")
    rows, default_out = ROW_SETS[args.rows]
    out_path = Path(args.out or default_out)
    if args.window_top is not None:
        if not args.window_top > 0:
            ap.error(f"--window-top {args.window_top}: give a noise level above 0")
        import ddpmlab.schedules

        ddpmlab.schedules.KARRAS_SIGMA_MAX = args.window_top
    torch.manual_seed(0)
    if args.samplers:
        rows = tuple(row for row in rows if row[0] in args.samplers.split(","))
    if args.steps:
        rows = tuple(row for row in rows if str(row[1]) in args.steps.split(","))
    if not rows:
        ap.error(f"--samplers / --steps leave none of the {args.rows} rows; see the rows in this script")
    result = {}
    if args.moons_run:
        result["moons"] = moons(args.moons_run, rows)
    if args.text_run:
        result["templated"] = templated(args.text_run, args.per_prompt, rows, args.guidance)
    if args.emoji_run:
        result["retrieval"] = retrieval(args.emoji_run)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()

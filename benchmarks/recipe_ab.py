"""Recipe A/B: train candidate recipes for the same wall-clock budget, one after the other, and score them alike.

    python benchmarks/recipe_ab.py --minutes 7.5 --arm base mnist --arm lr1e-3 mnist train.lr=1e-3
    python benchmarks/recipe_ab.py --minutes 0.3 --n 200 --arm a mnist --arm b mnist model.channels=16   # smoke run
    python benchmarks/recipe_ab.py --minutes 3 --guidance 0.5,1,2 --arm ag mnist train.guide_at=0.3   # autoguidance

Each --arm is NAME PRESET [SECTION.KEY=VALUE ...] (the values as `ddpmlab train --set` takes them). Every arm
gets the same wall-clock budget, which also ends its learning-rate schedule (train.Budget estimates the step the
budget ends at from the speed measured as it trains). Then --n samples from each with its preset's
sampler settings (conditional arms: every class in turn), scored against the same real reference: FID and KID in
the shipped classifier's features, and for MNIST the judge's recognizable share and class balance
(metrics/judge.py), each beside its floor or ceiling; for class-conditional arms also the shipped classifier's accuracy
against the requested class. Results: JSON after every arm (default
results/recipe_ab.json) and a sample grid PNG per arm beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402

MAX_STEPS = 1_000_000  # the budget, not train.steps, ends every arm


def train_arm(preset: str, overrides: list[str], minutes: float, out: Path) -> dict[str, Any]:
    """Train the recipe for `minutes` of wall clock: train.Budget sets its learning-rate schedule to end where the
    budget does, from the speed it measures as it goes."""
    from ddpmlab.config import build_config
    from ddpmlab.train import train

    cfg = build_config(preset, None, overrides, settings={"train": {"steps": MAX_STEPS, "minutes": minutes,
                                                                    "sample_every": 0}})
    r = train(cfg, out, overwrite=True, progress=False, log=lambda _: None)
    return {"steps": r.step, "train_seconds": round(r.seconds, 1), "train_images_per_s": round(r.images_per_s, 1),
            "batch_size": cfg.train.batch_size, "final_loss": r.loss}


def score_arm(run_dir: Path, n: int, scorers: dict, grid: Path, guidance: float | None = None) -> dict[str, Any]:
    """Sample n with the run's own sampler settings (guidance: another weight) and score them: FID, KID, and the
    judge where there is one."""
    from ddpmlab.sampling import load_run, with_sample_settings

    return score_run(with_sample_settings(load_run(run_dir), guidance=guidance), n, scorers, grid)


def score_run(run: Any, n: int, scorers: dict, grid: Path) -> dict[str, Any]:
    """score_arm for a loaded Run (its guide or settings changed, say): n samples, a grid, FID, KID, the judge."""
    from ddpmlab.evaluate import Scorer, default_cache_dir, nfe_of
    from ddpmlab.sampling import class_labels, sample
    from ddpmlab.viz import save_grid

    key = (run.cfg.data.name, run.item_shape)
    if key not in scorers:
        scorers[key] = Scorer(run, n, "auto", None, 0, default_cache_dir(), print)
    scorer = scorers[key]
    labels = class_labels(run, None, n) if run.cfg.model.num_classes else None
    t = time.perf_counter()
    x = sample(run, n, labels=labels)
    seconds = time.perf_counter() - t
    save_grid(x[:100], grid, nrow=10)
    m = scorer.score(x).to_json()
    s = run.cfg.sample
    out: dict[str, Any] = {"sampler": s.sampler, "sampler_steps": s.steps, "nfe": nfe_of(run), "guidance": s.guidance,
                           "sampling_s": round(seconds, 1), "grid": grid.name,
                           **{k: m[k] for k in ("fid", "kid", "kid_std", "precision", "recall")},
                           "floor": {k: scorer.floor.to_json()[k] for k in ("fid", "kid")}}
    if scorer.judge is not None:
        out["judge"] = scorer.judge.report(x)
    if labels is not None and scorer.classifier is not None and run.has_classes:
        out["accuracy"] = scorer.accuracy(x, labels)["accuracy"]
    return out


def table(arms: dict[str, dict]) -> list[str]:
    """The side-by-side table: steps reached, FID, KID, recognizable share and class balance per arm."""
    lines = ["| arm | recipe | steps | FID | KID | recognizable | rejects | balance TV | max dev | chi^2 | accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, a in arms.items():
        j = a["scores"].get("judge")
        judge = (f"{100 * j['recognizable_share']:.1f}% | {j['rejects']} | {j['total_variation']:.3f} | "
                 f"{j['max_abs_deviation']:.3f} | {j['chi2']:.1f}") if j else "- | - | - | - | -"
        acc = a["scores"].get("accuracy")
        lines.append(f"| {name} | {a['recipe']} | {a['train']['steps']} | {a['scores']['fid']:.2f} | "
                     f"{a['scores']['kid']:.4f} | {judge} | {'-' if acc is None else f'{100 * acc:.1f}%'} |")
    return lines


def floors(arms: dict[str, dict]) -> list[str]:
    """The floor / ceiling line under the table (from the first arm: same data, same reference)."""
    first = next(iter(arms.values()))["scores"]
    line = f"real-vs-real floor: FID {first['floor']['fid']:.2f}, KID {first['floor']['kid']:.4f}"
    if "judge" in first:
        c = first["judge"]["calibration"]
        line += (f"; recognizable share on held-out real digits {100 * c['real_share']:.1f}%, on pure noise "
                 f"{100 * c['noise_share']:.1f}%, on generated negatives {100 * c['negatives_share']:.1f}%")
    return [line]


def record(report: dict[str, Any], arms: dict[str, dict], out: Path) -> None:
    """Add scored arms to the report, rewrite its JSON (so a long run keeps what it has) and print their rows."""
    report["arms"].update(arms)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(table(arms)[2:]), flush=True)


def summary(report: dict[str, Any], out: Path) -> None:
    """The closing table of every arm, the floor line and where the JSON went."""
    print("\n".join([*table(report["arms"]), "", *floors(report["arms"])]))
    print(f"wrote {out}")


def main() -> None:
    """Parse the arms, train and score each in turn, print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", nargs="+", action="append", required=True, metavar="NAME PRESET [SET ...]",
                    help="one recipe: a name, a preset and --set style overrides (repeat for each arm)")
    ap.add_argument("--minutes", type=float, default=7.5, help="training budget per arm (default 7.5, the demo's)")
    ap.add_argument("--n", type=int, default=2000, help="samples scored per arm (default 2000)")
    ap.add_argument("--workdir", default="runs/recipe-ab", help="where the runs go")
    ap.add_argument("--guidance", type=lambda v: [float(w) for w in v.split(",")], default=[],
                    help="also score every arm at these guidance weights, e.g. 0.5,1,2 (conditional arms, or arms "
                         "with train.guide_at for autoguidance)")
    ap.add_argument("--out", default=str(RESULTS / "recipe_ab.json"))
    args = ap.parse_args()
    specs = {}
    for arm in args.arm:
        if len(arm) < 2:
            sys.exit(f"--arm needs a name and a preset, got {' '.join(arm)}")
        if arm[0] in specs:
            sys.exit(f"two arms are named {arm[0]}")
        specs[arm[0]] = (arm[1], arm[2:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {**machine(), "minutes": args.minutes, "n": args.n,
                              "command": " ".join(["python", *sys.argv]), "arms": {}}
    scorers: dict = {}
    for name, (preset, overrides) in specs.items():
        print(f"=== arm {name}: {preset} {' '.join(overrides)}, {args.minutes:g} minutes ===", flush=True)
        run_dir = Path(args.workdir) / name
        entry: dict[str, Any] = {"preset": preset, "overrides": overrides,
                                 "recipe": " ".join([preset, *overrides])}
        entry["train"] = train_arm(preset, overrides, args.minutes, run_dir)
        entry["scores"] = score_arm(run_dir, args.n, scorers, out.with_name(f"{out.stem}_{name}.png"))
        arms = {name: entry}
        for w in args.guidance:  # the same run at other guidance weights: rows of their own
            arms[f"{name} w={w:g}"] = {**entry, "scores": score_arm(
                run_dir, args.n, scorers, out.with_name(f"{out.stem}_{name}_w{w:g}.png"), guidance=w)}
        record(report, arms, out)
    summary(report, out)


if __name__ == "__main__":
    main()

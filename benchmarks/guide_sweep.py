"""Autoguidance after the fact: one training run, every kept snapshot's EMA tried as the guide, at several weights.

    python benchmarks/guide_sweep.py --minutes 7.5 --guides 0.1,0.2,0.3,0.5 --w 0.5,1,2 --n 1000
    python benchmarks/guide_sweep.py --reuse runs/guide-sweep --guides 0.2,0.3 --w 1 --n 2000
    python benchmarks/guide_sweep.py --minutes 0.3 --guides 0.5 --w 1 --n 100          # smoke run

train.guide_at picks the guide before training, so measuring it would take one run per choice. Here the preset
(default mnist, with any --set overrides) trains once for --minutes, keeping a snapshot every --every steps;
the power EMA's width is relative to the steps so far (train.ema = "power"), so the EMA of the snapshot at
fraction f of the run is the guide that guide_at = f would have kept. Each (guide, w) pair then samples --n
with the preset's sampler and is scored like recipe_ab.py's arms: FID, KID and, for MNIST, the judge's
recognizable share and class balance; w = 0 (no guide) is the first row. --interval LO,HI (repeatable) adds
rows that guide only at noise levels sigma_t / alpha_t in (LO, HI] (Kynkaenniemi et al. 2024, "Applying guidance
in a limited interval"; sample.guidance_interval), the plain network elsewhere. Results: JSON (default
results/guide_sweep.json) and a grid per row beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402
from recipe_ab import MAX_STEPS, record, score_run, summary  # noqa: E402


def fractions(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected fractions of the run in (0, 1), e.g. 0.2,0.3; got {text!r}")
    return values


def weights(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive guidance weights, e.g. 0.5,1,2; got {text!r}")
    return values


def interval(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI noise levels, e.g. 0.3,5; got {text!r}") from None
    if not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(f"expected 0 <= LO < HI, got {text!r}")
    return lo, hi


def train_once(preset: str, overrides: list[str], minutes: float, every: int, out: Path) -> dict[str, Any]:
    """Train for `minutes` with a snapshot every `every` steps, all of them kept."""
    from ddpmlab.config import build_config
    from ddpmlab.train import train

    cfg = build_config(preset, None, overrides, settings={"train": {
        "steps": MAX_STEPS, "minutes": minutes, "sample_every": 0, "ckpt_every": every, "keep": 100_000}})
    if cfg.train.ema != "power":
        sys.exit('the snapshots stand for guide_at only under the power EMA: add train.ema=power')
    r = train(cfg, out, overwrite=True, progress=True, log=lambda _: None)
    return {"steps": r.step, "train_seconds": round(r.seconds, 1), "train_images_per_s": round(r.images_per_s, 1),
            "batch_size": cfg.train.batch_size, "final_loss": r.loss}


def guide_from(run: Any, step: int) -> tuple[Any, int]:
    """The EMA of the snapshot nearest to `step`, as a network ready to guide run.model, and that snapshot's step."""
    from ddpmlab import checkpoint as ckpt
    from ddpmlab.models import build_model

    snaps = {int(p.name.split("_")[1]): p for p in ckpt.snapshots(run.path)}
    near = min(snaps, key=lambda s: abs(s - step))
    guide = build_model(run.cfg, run.item_shape)
    ckpt.load_weights(snaps[near] / ckpt.EMA, guide)
    return guide.to(run.device).eval(), near


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mnist")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--minutes", type=float, default=7.5, help="training budget (default 7.5, the demo's)")
    ap.add_argument("--every", type=int, default=50, help="steps between kept snapshots (default 50)")
    ap.add_argument("--reuse", type=Path, help="sweep a run this script trained before instead of training")
    ap.add_argument("--guides", type=fractions, default=[0.1, 0.2, 0.3, 0.5], help="guide snapshots as fractions "
                    "of the run (default 0.1,0.2,0.3,0.5)")
    ap.add_argument("--w", type=weights, default=[0.5, 1.0, 2.0], help="guidance weights (default 0.5,1,2)")
    ap.add_argument("--interval", type=interval, action="append", default=[], metavar="LO,HI",
                    help="also try each (guide, w) guiding only at sigma_t/alpha_t in (LO, HI] (repeatable)")
    ap.add_argument("--n", type=int, default=1000, help="samples scored per row (default 1000)")
    ap.add_argument("--workdir", type=Path, default=Path("runs/guide-sweep"))
    ap.add_argument("--out", type=Path, default=RESULTS / "guide_sweep.json")
    args = ap.parse_args()
    from ddpmlab.sampling import load_run, with_sample_settings

    run_dir = args.reuse or args.workdir
    report: dict[str, Any] = {**machine(), "n": args.n, "command": " ".join(["python", *sys.argv]), "arms": {}}
    if args.reuse is None:
        report["train"] = train_once(args.preset, args.overrides, args.minutes, args.every, run_dir)
    base = load_run(run_dir)
    train_info = report.get("train", {"steps": base.step})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scorers: dict = {}
    rows = [(None, 0.0, None)] + [(f, w, iv) for f in args.guides for w in args.w for iv in [None, *args.interval]]
    for frac, w, iv in rows:
        run = with_sample_settings(base, guidance=w, guidance_interval=() if iv is None else iv)
        name, recipe = "no guide", "w=0"
        if frac is not None:
            run.guide, step = guide_from(base, round(frac * base.step))
            name, recipe = f"guide {frac:g} w={w:g}", f"guide = EMA at step {step} of {base.step}, w={w:g}"
            if iv is not None:
                name, recipe = f"{name} in {iv[0]:g}-{iv[1]:g}", f"{recipe}, only at sigma in ({iv[0]:g}, {iv[1]:g}]"
        print(f"=== {name} ===", flush=True)
        grid = args.out.with_name(f"{args.out.stem}_{name.replace(' ', '_').replace('=', '')}.png")
        record(report, {name: {"recipe": recipe, "train": train_info, "scores": score_run(run, args.n, scorers, grid)}},
               args.out)
    summary(report, args.out)


if __name__ == "__main__":
    main()

"""Sampler A/B on one trained run: the same network and seeds, only the [sample] settings change, scored alike.

    python benchmarks/sample_ab.py runs/demo --arm preset --arm dpm20 sampler=dpmpp-2m steps=20
    python benchmarks/sample_ab.py runs/demo --arm w1 guidance=1 'guidance_interval=[]' --arm eta1 sampler=ddim eta=1
    python benchmarks/sample_ab.py runs/demo --n 200 --arm a --arm b steps=10        # smoke run

Each --arm is NAME [KEY=VALUE ...]: sample settings (the keys of a config's [sample] section, values as
`ddpmlab train --set sample.KEY=VALUE` takes them) applied over the run's own; no settings: the run as trained.
Choosing another sampler drops the options only the old one took, as `ddpmlab sample --sampler` does. Every arm
samples --n from the run's sample.seed and is scored as recipe_ab.py scores an arm: FID and KID in the shipped
classifier's features, and for MNIST the judge's recognizable share and class balance. Results: JSON after every arm
(default results/sample_ab.json; arms already in it are kept, not rerun) and a grid PNG per arm beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402
from recipe_ab import record, score_run, summary  # noqa: E402


def arm_run(base: Any, name: str, items: list[str]) -> Any:
    """base with an arm's KEY=VALUE sample settings, each read and checked as `--set sample.KEY=VALUE` is."""
    from ddpmlab.config import _merge, parse_override
    from ddpmlab.sampling import with_sample_settings

    raw: dict[str, Any] = {}
    for item in items:
        raw.update(parse_override(f"sample.{item}")["sample"])
    typed = _merge(base.cfg, {"sample": raw}, f"--arm {name}").sample
    return with_sample_settings(base, **{k: getattr(typed, k) for k in raw})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a trained run directory")
    ap.add_argument("--arm", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE ...]")
    ap.add_argument("--n", type=int, default=2000, help="samples scored per arm (default 2000)")
    ap.add_argument("--out", type=Path, default=RESULTS / "sample_ab.json")
    args = ap.parse_args()
    from ddpmlab.config import ConfigError
    from ddpmlab.sampling import load_run

    names = [arm[0] for arm in args.arm]
    if len(set(names)) != len(names):
        sys.exit(f"sample_ab: arm names must differ; got {names}")
    base = load_run(args.run)
    try:
        runs = {arm[0]: arm_run(base, arm[0], arm[1:]) for arm in args.arm}
    except ConfigError as exc:
        sys.exit(f"sample_ab: {exc}")
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    if report.get("run") not in (None, str(args.run)) or report.get("n") not in (None, args.n):
        sys.exit(f"sample_ab: {args.out} holds arms of {report['run']} at --n {report['n']}; pass another --out")
    report = {**machine(), "run": str(args.run), "step": base.step, "n": args.n,
              "command": " ".join(["python", *sys.argv]), "arms": report.get("arms", {})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scorers: dict = {}
    for arm in args.arm:
        name = arm[0]
        if name in report["arms"]:
            continue
        print(f"=== {name}: {' '.join(arm[1:]) or 'the run as trained'} ===", flush=True)
        grid = args.out.with_name(f"{args.out.stem}_{name}.png")
        record(report, {name: {"recipe": " ".join(arm[1:]) or "the run as trained", "train": {"steps": base.step},
                               "scores": score_run(runs[name], args.n, scorers, grid)}}, args.out)
    summary(report, args.out)


if __name__ == "__main__":
    main()

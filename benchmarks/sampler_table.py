"""Tables from benchmarks/results/sampler_oracle.json: ddpmlab's samplers and spacings against diffusers' best.

    python benchmarks/sampler_table.py [--json benchmarks/results/sampler_oracle.json] [--full]

For each mixture and NFE: diffusers' best setting (lowest error against the exact ODE solution among every
scheduler x spacing it offers here), and each ddpmlab sampler with the spacing that `spacing = "auto"` picks.
The error ratio ours / diffusers' best is what the default must keep at or below 1. --full adds every
sampler x spacing row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ddpmlab.samplers import resolve_spacing

SAMPLERS = ("ddim", "dpmpp-2m", "dpmpp-3m", "euler", "heun")


def steps_for(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="benchmarks/results/sampler_oracle.json")
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    data = json.loads(Path(args.json).read_text())
    print("| mixture | NFE | diffusers' best (error) | " + " | ".join(f"{s} auto" for s in SAMPLERS) + " |")
    print("|---|---|---|" + "---|" * len(SAMPLERS))
    for res in data["results"]:
        for nfe in data["nfe"]:
            rows = [r for r in res["rows"] if r["nfe"] == nfe]
            theirs = min((r for r in rows if r["side"] == "diffusers"), key=lambda r: r["ode_error"], default=None)
            cells = []
            for s in SAMPLERS:
                sp = resolve_spacing(s, "auto", steps_for(s, nfe))
                r = next(r for r in rows if r["side"] == "ddpmlab" and r["sampler"] == s and r["spacing"] == sp)
                ratio = f" ({r['ode_error'] / theirs['ode_error']:.2f}x)" if theirs else ""
                cells.append(f"{r['ode_error']:.4f}{ratio} {sp}, {r['modes']}/{res['components']} modes")
            best = f"{theirs['sampler']}/{theirs['spacing']} {theirs['ode_error']:.4f}" if theirs else "-"
            print(f"| {res['mixture']} | {nfe} | {best} | " + " | ".join(cells) + " |")
    if args.full:
        print("\n| mixture | side | sampler | spacing | " + " | ".join(f"NFE {n}" for n in data["nfe"]) + " |")
        print("|---|---|---|---|" + "---|" * len(data["nfe"]))
        for res in data["results"]:
            keys = sorted({(r["side"], r["sampler"], r["spacing"]) for r in res["rows"]})
            for side, sampler, spacing in keys:
                errs = {r["nfe"]: r for r in res["rows"] if (r["side"], r["sampler"], r["spacing"]) == (side, sampler,
                                                                                                     spacing)}
                cells = [f"{errs[n]['ode_error']:.4f}" if n in errs else "-" for n in data["nfe"]]
                print(f"| {res['mixture']} | {side} | {sampler} | {spacing} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

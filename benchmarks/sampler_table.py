"""Tables from benchmarks/results/sampler_oracle*.json: ddpmlab's samplers and spacings against diffusers' best.

    python benchmarks/sampler_table.py [--json FILE ...] [--full | --summary | --choose | --compact]

Default: for each mixture and NFE, the mean error against the exact ODE solution of diffusers' default
DPMSolverMultistepScheduler (2M, linspace), and every other entry as a multiple of it: diffusers' best setting
(lowest error among the 39 scheduler x spacing settings measured), and each ddpmlab sampler with the spacing
that `spacing = "auto"` picks (bold: no worse than diffusers' best). --full adds every sampler x spacing row.
--summary: per NFE, the worst and median over the mixtures of each sampler's auto error as a multiple of diffusers'
best for that mixture (the README's table). --choose: per sampler and NFE, the spacing with the smallest worst
ratio to diffusers' best over the mixtures of every file given, among the spacings that start at t = T (how
AUTO_SPACING is chosen). --compact: one table for all files given, each sampler's worst ratio per file.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ddpmlab.samplers import resolve_spacing
from ddpmlab.schedules import make_schedule, spaced_timesteps

SAMPLERS = ("ddim", "dpmpp-2m", "dpmpp-3m", "unipc-2", "unipc-3", "euler", "heun")


def steps_for(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def ours(rows: list[dict], sampler: str, spacing: str) -> dict | None:
    return next((r for r in rows if r["side"] == "ddpmlab" and r["sampler"] == sampler and r["spacing"] == spacing),
                None)


def auto_row(rows: list[dict], sampler: str, nfe: int) -> tuple[str, dict | None]:
    sp = resolve_spacing(sampler, "auto", steps_for(sampler, nfe), 1000)
    return sp, ours(rows, sampler, sp)


def per_mixture(data: dict, full: bool) -> None:
    present = [s for s in SAMPLERS if any(r["sampler"] == s for res in data["results"] for r in res["rows"])]
    print("| mixture | NFE | diffusers' default DPM++(2M) | diffusers' best of 39 | "
          + " | ".join(f"`{s}` auto" for s in present) + " |")
    print("|---|---|---|---|" + "---|" * len(present))
    for res in data["results"]:
        for nfe in data["nfe"]:
            rows = [r for r in res["rows"] if r["nfe"] == nfe]
            theirs = [r for r in rows if r["side"] == "diffusers"]
            if not theirs:
                continue
            best = min(theirs, key=lambda r: r["ode_error"])
            default = next(r for r in theirs if r["sampler"] == "dpm++2m" and r["spacing"] == "linspace")
            cells = []
            for s in present:
                sp, r = auto_row(rows, s, nfe)
                if r is None:
                    cells.append(f"- ({sp})")
                    continue
                mark = "**" if r["ode_error"] <= best["ode_error"] else ""
                lost = "" if r["modes"] == res["components"] else f", {r['modes']}/{res['components']} modes"
                cells.append(f"{mark}{r['ode_error'] / default['ode_error']:.2f}{mark} ({sp}{lost})")
            print(f"| {res['mixture']} | {nfe} | {default['ode_error']:.4f} | "
                  f"{best['ode_error'] / default['ode_error']:.2f} ({best['sampler']}/{best['spacing']}) | "
                  + " | ".join(cells) + " |")
    if full:
        print("\n| mixture | side | sampler | spacing | " + " | ".join(f"NFE {n}" for n in data["nfe"]) + " |")
        print("|---|---|---|---|" + "---|" * len(data["nfe"]))
        for res in data["results"]:
            keys = sorted({(r["side"], r["sampler"], r["spacing"]) for r in res["rows"]})
            for key in keys:
                errs = {r["nfe"]: r for r in res["rows"] if (r["side"], r["sampler"], r["spacing"]) == key}
                cells = [f"{errs[n]['ode_error']:.4f}" if n in errs else "-" for n in data["nfe"]]
                print(f"| {res['mixture']} | {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")


def ratios_to_best(data: dict, nfe: int, pick) -> list[float]:
    """pick(rows) -> row or None for each mixture; its error over diffusers' best at `nfe` (mixtures without either
    are left out)."""
    out = []
    for res in data["results"]:
        rows = [r for r in res["rows"] if r["nfe"] == nfe]
        theirs = [r["ode_error"] for r in rows if r["side"] == "diffusers"]
        r = pick(rows)
        if theirs and r is not None:
            out.append(r["ode_error"] / min(theirs))
    return out


def summary(data: dict) -> None:
    present = [s for s in SAMPLERS if any(r["sampler"] == s for res in data["results"] for r in res["rows"])]
    print("| NFE | " + " | ".join(f"`{s}` auto" for s in present) + " | diffusers' default DPM++(2M) | "
          "diffusers' best single setting |")
    print("|---|" + "---|" * (len(present) + 2))
    for nfe in data["nfe"]:
        cells = []
        for s in present:
            sp = resolve_spacing(s, "auto", steps_for(s, nfe), 1000)
            v = ratios_to_best(data, nfe, lambda rows, s=s, sp=sp: ours(rows, s, sp))
            cells.append(f"{sp}: {max(v):.2f} / {statistics.median(v):.2f}" if v else f"{sp}: -")
        default = ratios_to_best(data, nfe, lambda rows: next(
            (r for r in rows if r["side"] == "diffusers" and r["sampler"] == "dpm++2m" and r["spacing"] == "linspace"),
            None))
        settings = sorted({(r["sampler"], r["spacing"]) for res in data["results"] for r in res["rows"]
                           if r["side"] == "diffusers"})
        single = []
        for key in settings:
            v = ratios_to_best(data, nfe, lambda rows, key=key: next(
                (r for r in rows if r["side"] == "diffusers" and (r["sampler"], r["spacing"]) == key), None))
            if v:
                single.append((max(v), statistics.median(v), f"{key[0]}/{key[1]}"))
        w, m, name = min(single) if single else (float("nan"), float("nan"), "-")
        dcell = f"{max(default):.2f} / {statistics.median(default):.2f}" if default else "-"
        print(f"| {nfe} | " + " | ".join(cells) + f" | {dcell} | {name}: {w:.2f} / {m:.2f} |")


def starts_at_T(spacing: str, steps: int, files: list[dict]) -> bool:
    """Whether `spacing` starts at t = T under every file's schedule (x_T ~ N(0, I) holds only there)."""
    for name in {d.get("schedule", "linear") for d in files}:
        sched = make_schedule(name, 1000)
        if int(spaced_timesteps(sched, steps, spacing)[0]) != sched.T:  # type: ignore[arg-type]
            return False
    return True


def compact(files: list[dict]) -> None:
    """One row per NFE: each sampler's worst ratio to diffusers' best with its auto spacing, one value per file."""
    names = " / ".join(d.get("schedule", "linear") for d in files)
    print("| NFE | " + " | ".join(f"`{s}`" for s in SAMPLERS) + " | diffusers' default DPM++(2M) |")
    print("|---|" + "---|" * (len(SAMPLERS) + 1))
    for nfe in files[0]["nfe"]:
        cells = []
        for s in SAMPLERS:
            sp = resolve_spacing(s, "auto", steps_for(s, nfe), 1000)
            worst = [max(ratios_to_best(d, nfe, lambda rows, s=s, sp=sp: ours(rows, s, sp)), default=float("nan"))
                     for d in files]
            cells.append(" / ".join(f"{w:.2f}" for w in worst))
        default = [max(ratios_to_best(d, nfe, lambda rows: next(
            (r for r in rows if r["side"] == "diffusers" and r["sampler"] == "dpm++2m" and r["spacing"] == "linspace"),
            None)), default=float("nan")) for d in files]
        print(f"| {nfe} | " + " | ".join(cells) + " | " + " / ".join(f"{w:.2f}" for w in default) + " |")
    print(f"\n(worst over the mixtures of the error as a multiple of diffusers' best setting; {names})")


def choose(files: list[dict]) -> None:
    print("| sampler | NFE | spacing (worst ratio to diffusers' best over all mixtures and files) | runner-up |")
    print("|---|---|---|---|")
    for s in SAMPLERS:
        spacings = sorted({r["spacing"] for d in files for res in d["results"] for r in res["rows"]
                           if r["side"] == "ddpmlab" and r["sampler"] == s})
        if not spacings:
            continue
        for nfe in files[0]["nfe"]:
            scored = []
            for sp in (sp for sp in spacings if starts_at_T(sp, steps_for(s, nfe), files)):
                v = [x for d in files for x in ratios_to_best(d, nfe, lambda rows, sp=sp: ours(rows, s, sp))]
                if v:
                    scored.append((max(v), sp))
            scored.sort()
            second = f"{scored[1][1]} {scored[1][0]:.2f}" if len(scored) > 1 else "-"
            print(f"| {s} | {nfe} | {scored[0][1]} {scored[0][0]:.2f} | {second} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", nargs="+", default=["benchmarks/results/sampler_oracle.json"])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true")
    mode.add_argument("--summary", action="store_true")
    mode.add_argument("--choose", action="store_true")
    mode.add_argument("--compact", action="store_true")
    args = ap.parse_args()
    files = [json.loads(Path(p).read_text()) for p in args.json]
    if args.choose or args.compact:
        (choose if args.choose else compact)(files)
        return
    for path, data in zip(args.json, files):
        if len(files) > 1:
            print(f"\n{path} ({data.get('schedule', 'linear')} schedule)\n")
        if args.summary:
            summary(data)
        else:
            per_mixture(data, args.full)


if __name__ == "__main__":
    main()

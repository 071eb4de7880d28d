"""What the eval job writes into a run directory: eval.json, eval.md, the sample grid and the sweep plot.

Every file goes through checkpoint.atomic_write (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .checkpoint import atomic_write

# metric key -> (label, better, what it means); the table rows of eval.md, in this order
IMAGE_ROWS = {
    "fid": ("FID", "lower", "Frechet distance between Gaussians fitted to the features of samples and real images "
            "(Heusel et al. 2017): one number for quality and diversity together; biased upwards at small N"),
    "kid": ("KID", "lower", "unbiased MMD^2 with a cubic kernel (Binkowski et al. 2018), mean +- std over subsets: "
            "0 in expectation for a perfect model, so it compares across N better than FID"),
    "precision": ("precision", "higher", "share of samples inside the k-NN (k = 3) balls of real features "
                  "(Kynkaanniemi et al. 2019): fidelity, are samples realistic?"),
    "recall": ("recall", "higher", "share of real images inside the k-NN balls of the samples: diversity, "
               "is the whole data distribution covered?"),
}
TOY_ROWS = {
    "energy_distance": ("energy distance", "lower", "2 E|A-B| - E|A-A'| - E|B-B'| between samples and fresh true "
                        "points (Szekely & Rizzo 2013); a V-statistic, so > 0 even for a perfect model"),
    "sliced_wasserstein": ("sliced Wasserstein SW_2", "lower", "root mean over 180 directions of the 1D W_2^2 "
                           "between projected samples and true points"),
}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def _metric_cell(m: dict, key: str) -> str:
    if key == "kid":
        return f"{_fmt(m['kid'])} +- {_fmt(m['kid_std'], 2)}"
    return _fmt(m.get(key))


def _metric_table(r: dict) -> list[str]:
    rows = IMAGE_ROWS if r["kind"] == "image" else TOY_ROWS
    lines = ["| metric | model | real-vs-real floor | better | what it measures |", "|---|---|---|---|---|"]
    for key, (label, better, what) in rows.items():
        lines.append(f"| {label} | {_metric_cell(r['metrics'], key)} | {_metric_cell(r['floor'], key)} | {better} "
                     f"| {what} |")
    if "mode_coverage" in r["metrics"]:
        m, f = r["metrics"]["mode_coverage"], r["floor"]["mode_coverage"]
        lines.append(f"| modes covered | {m['modes_covered']}/{m['modes']} | {f['modes_covered']}/{f['modes']} | "
                     "higher | modes with at least 1/4 of their expected share of samples within 3 std |")
        lines.append(f"| within 3 std of a mode | {_fmt(m['high_quality'])} | {_fmt(f['high_quality'])} | higher | "
                     "share of samples that land on some mode (VEEGAN's \"high-quality samples\") |")
    return lines


def _sweep_table(rows: list[dict], kind: str) -> list[str]:
    if kind == "image":
        head = "| sampler | steps | NFE | FID | KID | precision | recall | sampling s |"
        body = [f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {_fmt(r['fid'])} | {_fmt(r['kid'])} | "
                f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['seconds'])} |" for r in rows]
    else:
        head = "| sampler | steps | NFE | energy distance | SW_2 | sampling s |"
        body = [f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {_fmt(r['energy_distance'])} | "
                f"{_fmt(r['sliced_wasserstein'])} | {_fmt(r['seconds'])} |" for r in rows]
    return [head, "|" + "---|" * (head.count("|") - 1), *body]


def _guidance_table(rows: list[dict], kind: str) -> list[str]:
    key = "fid" if kind == "image" else "energy_distance"
    has_acc = any("accuracy" in r for r in rows)
    head = f"| guidance w | {'FID' if kind == 'image' else 'energy distance'} |" + (" accuracy |" if has_acc else "")
    body = [f"| {_fmt(r['guidance'])} | {_fmt(r[key])} |" + (f" {_fmt(r.get('accuracy'))} |" if has_acc else "")
            for r in rows]
    return [head, "|" + "---|" * (head.count("|") - 1), *body]


def render_markdown(r: dict) -> str:
    """eval.md: the numbers, what each means, its floor, and the sample grid."""
    s = r["sampling"]
    files = r.get("files", {})
    lines = [f"# Evaluation of `{r['run']}` (step {r['step']}, {r['dataset']})", "",
             f"- samples: N = {r['n']}, sampler `{s['sampler']}`, {s['steps']} steps ({s['nfe']} network evaluations "
             f"per sample), spacing `{s['spacing']}`, guidance w = {_fmt(s['guidance'])}, seed {s['seed']}",
             f"- time: sampling {_fmt(s['seconds'])} s; features and metrics {_fmt(r['metric_seconds'])} s",
             f"- real data: {r['reference']}"]
    if r["kind"] == "image":
        lines.append(f"- features: `{r['features']}` ({r['feature_dim']}-d): {r['features_note']}")
    lines += ["", "## Sample quality", "",
              "Each metric is shown beside its real-vs-real floor: the same metric between two disjoint sets of "
              "real data at the same N. A perfect model scores about the floor, not 0; compare runs only at equal N, "
              "features and reference set.", "", *_metric_table(r)]
    if "judge" in r:
        from .metrics.judge import judge_markdown

        lines += judge_markdown(r["judge"])
    if "conditional" in r:
        c = r["conditional"]
        names = c.get("class_names") or [str(i) for i in range(len(c["per_class"]))]
        lines += ["", "## Class-conditional accuracy", "",
                  f"A classifier trained on real data labels the samples; accuracy against the requested classes: "
                  f"**{_fmt(c['accuracy'])}** (the same classifier on real held-out images: "
                  f"{_fmt(r.get('classifier_accuracy_on_real'))}).", "",
                  "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
                  "| accuracy | " + " | ".join(_fmt(v) for v in c["per_class"]) + " |"]
    if r.get("guidance_sweep"):
        lines += ["", "## Guidance sweep", "", "Same seeds and labels for every w; w = 0 is plain conditional "
                  "sampling. Guidance usually trades diversity (recall, FID) for class fidelity (accuracy).", "",
                  *_guidance_table(r["guidance_sweep"], r["kind"])]
    if r.get("sweep"):
        lines += ["", "## Quality vs network evaluations", "",
                  "NFE counts forward passes per sample (Heun: 2 per step, minus 1 for its last, Euler, step; "
                  "with guidance each pass runs the conditional and unconditional halves as one batch).", "",
                  *_sweep_table(r["sweep"], r["kind"])]
        if "sweep_plot" in files:
            lines += ["", f"![quality vs NFE]({Path(files['sweep_plot']).name})"]
    lines += ["", "## Samples", "", f"![samples]({Path(files.get('samples', 'eval_samples.png')).name})", ""]
    return "\n".join(lines)


def plot_sweep(result: dict, path: Path) -> None:
    """Quality (FID or energy distance) against NFE, one line per sampler, with the real-vs-real floor."""
    from .viz import _plt, _save_figure

    key, label = ("fid", "FID") if result["kind"] == "image" else ("energy_distance", "energy distance")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in dict.fromkeys(r["sampler"] for r in result["sweep"]):
        rows = sorted((r for r in result["sweep"] if r["sampler"] == name), key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in rows], [r[key] for r in rows], marker="o", label=name)
    ax.axhline(result["floor"][key], color="gray", ls="--", lw=1, label="real-vs-real floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel(f"{label} (N = {result['n']})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def write_outputs(result: dict, run, samples: torch.Tensor, labels: torch.Tensor | None, out_dir: Path) -> dict:
    """Write the sample grid (or scatter), the sweep plot, eval.json and eval.md; returns their paths."""
    from .viz import save_grid, save_scatter

    files = {"samples": str(out_dir / "eval_samples.png")}
    if run.is_image:
        k = run.cfg.model.num_classes
        nrow = k if k else 8
        save_grid(samples[: nrow * 8], files["samples"], nrow=nrow)  # conditional: one column per class
    else:
        from .data import toy_points

        save_scatter(samples, files["samples"], reference=toy_points(run.cfg.data.name, len(samples), seed=1)[0],
                     labels=labels)
    if result.get("sweep"):
        files["sweep_plot"] = str(out_dir / "eval_sweep.png")
        plot_sweep(result, Path(files["sweep_plot"]))
    files["json"], files["markdown"] = str(out_dir / "eval.json"), str(out_dir / "eval.md")
    result = {**result, "files": files}
    blob = (json.dumps(result, indent=2) + "\n").encode()
    atomic_write(Path(files["json"]), lambda f: f.write(blob))
    text = render_markdown(result).encode()
    atomic_write(Path(files["markdown"]), lambda f: f.write(text))
    return files

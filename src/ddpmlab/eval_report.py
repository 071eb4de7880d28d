"""What the eval job writes into a run directory: eval.json, eval.md, the sample grid and the sweep plot.

Every file goes through io.atomic_write (temp file, fsync, rename).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .eval_results import EvalResult, GuidanceRow, SweepRow, fmt
from .io import atomic_write


def _metric_table(r: EvalResult) -> list[str]:
    lines = ["| metric | model | real-vs-real floor | better | what it measures |", "|---|---|---|---|---|"]
    for key, (label, better, what) in r.metrics.ROWS.items():
        lines.append(f"| {label} | {r.metrics.cell(key)} | {r.floor.cell(key)} | {better} | {what} |")
    return lines + r.metrics.extra_rows(r.floor)  # type: ignore[arg-type]


def _sweep_table(rows: tuple[SweepRow, ...]) -> list[str]:
    columns = rows[0].metrics.SWEEP_COLUMNS
    head = "| sampler | steps | NFE | " + " | ".join(label for _, label in columns) + " | sampling s |"
    body = [f"| {r.sampler} | {r.steps} | {r.nfe} | " + " | ".join(fmt(getattr(r.metrics, k)) for k, _ in columns)
            + f" | {fmt(r.seconds)} |" for r in rows]
    return [head, "|" + "---|" * (head.count("|") - 1), *body]


def _guidance_table(rows: tuple[GuidanceRow, ...]) -> list[str]:
    key, label = rows[0].metrics.HEADLINE
    has_acc = any(r.accuracy is not None for r in rows)
    has_judge = any(r.recognizable is not None for r in rows)
    head = f"| guidance w | {label} |" + (" accuracy |" if has_acc else "") + (" recognizable |" if has_judge else "")
    body = [f"| {fmt(r.guidance)} | {fmt(getattr(r.metrics, key))} |" + (f" {fmt(r.accuracy)} |" if has_acc else "")
            + (f" {fmt(r.recognizable)} |" if has_judge else "") for r in rows]
    return [head, "|" + "---|" * (head.count("|") - 1), *body]


def render_markdown(r: EvalResult) -> str:
    """eval.md: the numbers, what each means, its floor, and the sample grid."""
    s, files = r.sampling, r.files
    lines = [f"# Evaluation of `{r.run}` (step {r.step}, {r.dataset})", "",
             f"- samples: N = {r.n}, sampler `{s.sampler}`, {s.steps} steps ({s.nfe} network evaluations per sample), "
             f"spacing `{s.spacing}`, guidance w = {fmt(s.guidance)}, seed {s.seed}",
             f"- time: sampling {fmt(s.seconds)} s; features and metrics {fmt(r.metric_seconds)} s",
             f"- real data: {r.info['reference']}"]
    if "features" in r.info:
        lines.append(f"- features: `{r.info['features']}` ({r.info['feature_dim']}-d): {r.info['features_note']}")
    lines += ["", "## Sample quality", "",
              "Each metric is shown beside its real-vs-real floor: the same metric between two disjoint sets of "
              "real data at the same N. A perfect model scores about the floor, not 0; compare runs only at equal N, "
              "features and reference set.", "", *_metric_table(r)]
    if r.judge is not None:
        from .metrics.judge import judge_markdown

        lines += judge_markdown(r.judge)
    if r.conditional is not None:
        c = r.conditional
        names = c.get("class_names") or [str(i) for i in range(len(c["per_class"]))]
        lines += ["", "## Class-conditional accuracy", "",
                  f"A classifier trained on real data labels the samples; accuracy against the requested classes: "
                  f"**{fmt(c['accuracy'])}** (the same classifier on real held-out images: "
                  f"{fmt(r.info.get('classifier_accuracy_on_real'))}).", "",
                  "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
                  "| accuracy | " + " | ".join(fmt(v) for v in c["per_class"]) + " |"]
    if r.guidance_sweep:
        lines += ["", "## Guidance sweep", "", "Same seeds and labels for every w; w = 0 is unguided "
                  "sampling (plain conditional sampling on a class-conditional run; no guide on an autoguided one). "
                  "Guidance usually trades diversity (recall, FID) for class fidelity (accuracy).", "",
                  *_guidance_table(r.guidance_sweep)]
    if r.sweep:
        lines += ["", "## Quality vs network evaluations", "",
                  "NFE counts forward passes per sample (Heun: 2 per step, minus 1 for its last, Euler, step; "
                  "with guidance each pass runs the conditional and unconditional halves as one batch).", "",
                  *_sweep_table(r.sweep)]
        if "sweep_plot" in files:
            lines += ["", f"![quality vs NFE]({Path(files['sweep_plot']).name})"]
    lines += ["", "## Samples", "", f"![samples]({Path(files.get('samples', 'eval_samples.png')).name})", ""]
    return "\n".join(lines)


def plot_sweep(r: EvalResult, path: Path) -> None:
    """Quality (FID or energy distance) against NFE, one line per sampler, with the real-vs-real floor."""
    from .viz import _plt, _save_figure

    key, label = r.metrics.HEADLINE
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in dict.fromkeys(row.sampler for row in r.sweep):
        rows = sorted((row for row in r.sweep if row.sampler == name), key=lambda row: row.nfe)
        ax.plot([row.nfe for row in rows], [getattr(row.metrics, key) for row in rows], marker="o", label=name)
    ax.axhline(getattr(r.floor, key), color="gray", ls="--", lw=1, label="real-vs-real floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel(f"{label} (N = {r.n})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def write_outputs(result: EvalResult, run, samples: torch.Tensor, labels: torch.Tensor | None,
                  out_dir: Path) -> EvalResult:
    """Write the sample grid (or scatter), the sweep plot, eval.json and eval.md; the result with their paths."""
    from .viz import save_grid, save_scatter

    files = {"samples": str(out_dir / "eval_samples.png")}
    if run.is_image:
        shown = samples[:64]
        if labels is not None and run.has_classes:  # conditional: a row of 8 per class
            shown = samples[torch.cat([torch.nonzero(labels.cpu() == c).flatten()[:8]
                                       for c in range(run.cfg.model.num_classes)])]
        save_grid(shown, files["samples"], nrow=8)
    else:
        from .data import toy_points

        save_scatter(samples, files["samples"], reference=toy_points(run.cfg.data.name, len(samples), seed=1)[0],
                     labels=labels)
    if result.sweep:
        files["sweep_plot"] = str(out_dir / "eval_sweep.png")
        plot_sweep(result, Path(files["sweep_plot"]))
    files["json"], files["markdown"] = str(out_dir / "eval.json"), str(out_dir / "eval.md")
    result = dataclasses.replace(result, files=files)
    blob = (json.dumps(result.to_json(), indent=2) + "\n").encode()
    atomic_write(Path(files["json"]), lambda f: f.write(blob))
    text = render_markdown(result).encode()
    atomic_write(Path(files["markdown"]), lambda f: f.write(text))
    return result

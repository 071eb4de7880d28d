"""Handlers for a run: the controls laid out when one is picked, and its records in the Run tab."""

import html
from pathlib import Path

from ...errors import DDPMLabError
from .. import gradio
from ..jobs.records import run_records
from ..jobs.runs import run_facts
from .common import LATEST, job_dir

# the controls a run lays out, in the order run_changed returns their updates
RUN_CONTROLS = ("checkpoint", "summary", "sampler", "steps", "spacing", "seed", "class", "prompts", "guidance",
                "forward_T", "forward_t", "forward_schedule", "compare_class", "compare_guidance", "compare_steps_a",
                "compare_steps_b", "edit_class", "guidance_sampler", "guidance_steps", "guidance_prompts")


def run_changed(path: str | None):
    """The controls laid out for a run: its sampler settings, classes or prompts, checkpoints, and a summary."""
    gr = gradio()
    keep = {name: gr.update() for name in RUN_CONTROLS}
    keep["checkpoint"] = gr.update(choices=[LATEST], value=LATEST)
    if not path:
        keep["summary"] = ("No run is open. Start the studio with a run directory (`ddpmlab studio runs/NAME`) or "
                           "train one (`make demo`); the Forward tab works without one.")
        return tuple(keep.values())
    try:
        f = run_facts(path)
    except DDPMLabError as exc:
        keep["summary"] = f"**{html.escape(str(exc))}**"
        return tuple(keep.values())
    what = ("text-conditional" if f.text else f"{len(f.class_names)} classes" if f.conditional else "unconditional")
    shape = "x".join(str(v) for v in f.item_shape)
    summary = (f"`{f.path}`: {f.dataset}, {shape} {'images' if f.is_image else 'points'}, {what}; "
               f"{f.schedule} schedule, T = {f.T}; checkpoints at step {', '.join(map(str, f.checkpoints)) or 'none'}")
    classes = gr.update(choices=["all", *f.class_names], value="all", visible=f.conditional)
    guided = gr.update(value=f.guidance, visible=f.conditional or f.text)
    steps = gr.update(maximum=f.T, value=min(f.steps, f.T))
    short = gr.update(maximum=f.T, value=min(10, f.T))
    updates = {
        "checkpoint": gr.update(choices=[LATEST, *map(str, f.checkpoints[:-1][::-1])], value=LATEST),
        "summary": summary, "sampler": gr.update(value=f.sampler), "steps": steps,
        "spacing": gr.update(value=f.spacing), "seed": gr.update(value=f.seed), "class": classes,
        "prompts": gr.update(visible=f.text), "guidance": guided, "forward_T": gr.update(value=f.T),
        "forward_t": gr.update(maximum=f.T, value=f.T // 4),
        "forward_schedule": gr.update(value=f.schedule), "compare_class": classes, "compare_guidance": guided,
        "compare_steps_a": short, "compare_steps_b": short,
        "edit_class": gr.update(choices=["all", *f.class_names], value="all", visible=f.conditional),
        "guidance_sampler": gr.update(value=f.sampler), "guidance_steps": steps,
        "guidance_prompts": gr.update(visible=f.text),
    }
    return tuple(updates[name] for name in RUN_CONTROLS)


def records_handler(workdir: Path):
    """The Run tab's handler: config.toml, the loss curve, metrics rows, eval.md and results of the run picked."""
    gr = gradio()

    def records(path):
        if not path:
            return "", None, None, "", gr.update(visible=False)
        try:
            r = run_records(path, job_dir(workdir))
        except DDPMLabError as exc:
            return f"# {exc}", None, None, "", gr.update(visible=False)
        import pandas as pd

        table = pd.DataFrame(r.metrics) if r.metrics else None
        report = r.report or "No evaluation yet: `ddpmlab eval RUN` writes eval.md here."
        return (r.config, (str(r.loss_png) if r.loss_png else None), table, report,
                gr.update(value=r.results, visible=bool(r.results)))

    return records

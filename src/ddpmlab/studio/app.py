"""The studio's page: a run picker over six tabs (Sample, Compare, Forward, Guidance, Edit, Run), each laid out
and wired by its class in studio.tabs.

Every job that runs a network shares one queue slot (concurrency_id "network"), so two pages sampling at
once wait for each other instead of interleaving on the same network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from . import gradio
from .handlers import common
from .handlers.edit import first_edit_source
from .handlers.run import RUN_CONTROLS, run_changed
from .jobs.runs import run_facts, sampler_names, spacing_names
from .tabs.common import Page
from .tabs.compare import CompareTab
from .tabs.edit import EditTab
from .tabs.forward import ForwardTab
from .tabs.guidance import GuidanceTab
from .tabs.run import RunTab
from .tabs.sample import SampleTab

# pixel art stays pixel art when the browser scales a 28 x 28 grid up
CSS = """
.pixels img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
.pixels canvas { image-rendering: pixelated; }
.fit img { width: 100%; height: 100%; object-fit: contain; padding-top: 28px; box-sizing: border-box; }
"""


def build_app(runs: Sequence[Path], notes: Sequence[str], workdir: Path):
    """The page (a gr.Blocks, not yet launched) for the runs offered; jobs write under workdir."""
    gr = gradio()
    common.PICTURES[:] = [workdir / "pictures"]
    datasets = list(dict.fromkeys([*_image_datasets(runs), "mnist-5k"]))

    with gr.Blocks(title="ddpmlab studio", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        run, checkpoint, summary = _run_picker([str(p) for p in runs], notes)
        page = Page(run, checkpoint, workdir, sampler_names(), spacing_names())
        sample, compare = SampleTab(page), CompareTab(page)
        forward, guidance = ForwardTab(datasets), GuidanceTab(page)
        edit, records = EditTab(page), RunTab(page)

        # the events, in this order: a run picked (or the page loaded) lays out every tab, then each tab's own
        laid_out = {"checkpoint": checkpoint, "summary": summary}
        for tab in (sample, compare, forward, guidance, edit):
            laid_out.update(tab.run_controls())
        on_run = dict(fn=run_changed, inputs=run, outputs=[laid_out[name] for name in RUN_CONTROLS], queue=False,
                      api_visibility="private")
        show_records = records.show_records()
        for event in (run.change, demo.load):
            event(**on_run).then(**show_records).then(**forward.redraw, api_visibility="private").then(
                first_edit_source, **edit.load_picture)
        for tab in (sample, compare, guidance, forward, edit):
            tab.wire()
    return demo


def _run_picker(choices: list[str], notes: Sequence[str]) -> tuple[Any, Any, Any]:
    """The page's head: its title, the notes on paths refused, the run and checkpoint dropdowns, the summary."""
    gr = gradio()
    gr.Markdown("## ddpmlab studio")
    if notes:
        gr.Markdown("\n".join(f"- {n}" for n in notes), elem_id="notes")
    with gr.Row():
        run = gr.Dropdown(choices, value=choices[0] if choices else None, label="Run", scale=3, elem_id="run",
                          allow_custom_value=True)
        checkpoint = gr.Dropdown([common.LATEST], value=common.LATEST, label="Checkpoint (training step)", scale=1,
                                 allow_custom_value=True, elem_id="checkpoint")
    summary = gr.Markdown(elem_id="summary")
    return run, checkpoint, summary


def _image_datasets(runs: Sequence[Path]) -> list[str]:
    """The image datasets the runs were trained on, for the Forward tab's menu."""
    names = []
    for path in runs:
        try:
            f = run_facts(path)
        except Exception:
            continue
        if f.is_image:
            names.append(f.dataset)
    return names

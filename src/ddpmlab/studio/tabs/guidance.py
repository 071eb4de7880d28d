"""The Guidance tab: a classifier-free guidance sweep, a row per class (or prompt) and a block per weight."""

from __future__ import annotations

from typing import Any

from .. import gradio
from ..handlers.common import stop_handler
from ..handlers.guidance import guidance_handler
from .common import NETWORK, SHOWN, Page


class GuidanceTab:
    """The Guidance tab's components, laid out on construction."""

    def __init__(self, page: Page):
        gr = gradio()
        self.page = page
        with gr.Tab("Guidance", id="guidance"):
            gr.Markdown("Classifier-free guidance, (1 + w) eps(x, c) - w eps(x): a row per class (or prompt), a "
                        "block per w, the same seeds in every block, as `ddpmlab sample --guidance-sweep` draws it.")
            with gr.Row():
                self.weights = gr.Textbox("0,1,3,5", label="Weights w (comma-separated)")
                self.per_cell = gr.Slider(1, 16, value=6, step=1, label="Images per class")
                self.seed = gr.Number(0, precision=0, label="Seed")
            with gr.Row():
                self.sampler = gr.Dropdown(page.samplers, label="Sampler", elem_id="sampler")
                self.steps = gr.Slider(1, 1000, value=20, step=1, label="Steps")
                self.spacing = gr.Dropdown(page.spacings, value="auto", label="Spacing")
            self.prompts = gr.Textbox(label="Prompts (text runs; one row each)", lines=3, visible=False)
            with gr.Row():
                self.go = gr.Button("Sweep", variant="primary", elem_id="guidance-go")
                self.halt = gr.Button("Stop", variant="stop")
            self.status = gr.Markdown(elem_id="guidance-status")
            self.out = gr.Image(label="guidance sweep", type="filepath", **SHOWN, elem_id="guidance-out")

    def run_controls(self) -> dict[str, Any]:
        """The controls a run lays out, by their handlers.run.RUN_CONTROLS names."""
        return {"guidance_sampler": self.sampler, "guidance_steps": self.steps, "guidance_prompts": self.prompts}

    def wire(self) -> None:
        """Sweep draws the figure (the API's /guidance); Stop ends it."""
        inputs = [self.page.run, self.page.checkpoint, self.weights, self.per_cell, self.seed, self.sampler,
                  self.steps, self.spacing, self.prompts]
        job = self.go.click(guidance_handler(self.page.workdir), inputs, [self.out, self.status],
                            api_name="guidance", **NETWORK)
        self.halt.click(stop_handler(), None, None, cancels=[job], queue=False, api_visibility="private")

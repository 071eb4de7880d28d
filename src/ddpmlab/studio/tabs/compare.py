"""The Compare tab: the same seeds through two sampler settings, A and B, side by side."""

from __future__ import annotations

from typing import Any

from .. import gradio
from ..handlers.common import stop_handler
from ..handlers.compare import compare_handler
from ..jobs.sampling import MOST_IMAGES
from .common import NETWORK, SHOWN, Page


class CompareTab:
    """The Compare tab's components, laid out on construction."""

    def __init__(self, page: Page):
        gr = gradio()
        self.page = page
        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                with gr.Column(min_width=260):
                    self.seed = gr.Number(0, precision=0, label="Seed (the same for both)")
                    self.n = gr.Slider(1, MOST_IMAGES, value=8, step=1, label="Images", elem_id="compare-n")
                    self.klass = gr.Dropdown(["all"], value="all", label="Class", visible=False,
                                             allow_custom_value=True)
                    self.guidance = gr.Slider(0, 10, value=0, step=0.5, label="Guidance w", visible=False)
                with gr.Column(min_width=220):
                    self.sampler_a = gr.Dropdown(page.samplers, value="ddim", label="A: sampler")
                    self.steps_a = gr.Slider(1, 1000, value=10, step=1, label="A: steps")
                    self.spacing_a = gr.Dropdown(page.spacings, value="auto", label="A: spacing")
                with gr.Column(min_width=220):
                    self.sampler_b = gr.Dropdown(page.samplers, value="dpmpp-2m", label="B: sampler")
                    self.steps_b = gr.Slider(1, 1000, value=10, step=1, label="B: steps")
                    self.spacing_b = gr.Dropdown(page.spacings, value="auto", label="B: spacing")
            with gr.Row():
                self.go = gr.Button("Compare", variant="primary", elem_id="compare-go")
                self.halt = gr.Button("Stop", variant="stop")
            self.status = gr.Markdown(elem_id="compare-status")
            with gr.Row():
                self.grid_a = gr.Image(label="A", type="filepath", **SHOWN, height=300, elem_id="grid-a",
                                       elem_classes="pixels")
                self.grid_b = gr.Image(label="B", type="filepath", **SHOWN, height=300, elem_id="grid-b",
                                       elem_classes="pixels")

    def run_controls(self) -> dict[str, Any]:
        """The controls a run lays out, by their handlers.run.RUN_CONTROLS names."""
        return {"compare_class": self.klass, "compare_guidance": self.guidance, "compare_steps_a": self.steps_a,
                "compare_steps_b": self.steps_b}

    def wire(self) -> None:
        """Compare samples A then B (the API's /compare); Stop ends it."""
        inputs = [self.page.run, self.page.checkpoint, self.seed, self.n, self.klass, self.guidance, self.sampler_a,
                  self.steps_a, self.spacing_a, self.sampler_b, self.steps_b, self.spacing_b]
        job = self.go.click(compare_handler(self.page.workdir), inputs, [self.grid_a, self.grid_b, self.status],
                            api_name="compare", **NETWORK)
        self.halt.click(stop_handler(), None, None, cancels=[job], queue=False, api_visibility="private")

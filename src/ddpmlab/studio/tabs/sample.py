"""The Sample tab: sampler settings, the x_t / x0 frames streamed while sampling, the grid and its downloads."""

from __future__ import annotations

from typing import Any

from .. import gradio
from ..handlers.common import stop_handler
from ..handlers.sample import sample_handler
from ..jobs.sampling import MOST_IMAGES
from .common import NETWORK, SHOWN, Page


class SampleTab:
    """The Sample tab's components, laid out on construction."""

    def __init__(self, page: Page):
        gr = gradio()
        self.page = page
        with gr.Tab("Sample", id="sample"):
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    self.sampler = gr.Dropdown(page.samplers, label="Sampler", elem_id="sampler")
                    self.steps = gr.Slider(1, 1000, value=20, step=1, label="Steps (network evaluations)",
                                           elem_id="steps")
                    self.spacing = gr.Dropdown(page.spacings, value="auto", label="Timestep spacing")
                    with gr.Row():
                        self.seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                        self.n = gr.Slider(1, MOST_IMAGES, value=16, step=1, label="Images", elem_id="images")
                    self.klass = gr.Dropdown(["all"], value="all", label="Class", visible=False,
                                             allow_custom_value=True)
                    self.prompts = gr.Textbox(label="Prompts (one grid row each)", lines=3, visible=False)
                    self.guidance = gr.Slider(0, 10, value=0, step=0.5, label="Guidance w", visible=False)
                    with gr.Row():
                        self.go = gr.Button("Generate", variant="primary", elem_id="generate")
                        self.halt = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Column(scale=2):
                    with gr.Row():
                        self.x_t = gr.Image(label="x_t", format="png", **SHOWN, height=260,
                                            elem_id="frame-xt", elem_classes="pixels")
                        self.x0 = gr.Image(label="x0 estimate", format="png", **SHOWN, height=260,
                                           elem_id="frame-x0", elem_classes="pixels")
                    self.status = gr.Markdown(elem_id="sample-status")
                    self.grid = gr.Image(label="Samples", type="filepath", format="png", **SHOWN, height=360,
                                         elem_id="grid", elem_classes="pixels")
                    with gr.Row():
                        self.png = gr.DownloadButton("Download PNG", interactive=False, elem_id="download-png")
                        self.npz = gr.DownloadButton("Download .npz", interactive=False, elem_id="download-npz")

    def run_controls(self) -> dict[str, Any]:
        """The controls a run lays out, by their handlers.run.RUN_CONTROLS names."""
        return {"sampler": self.sampler, "steps": self.steps, "spacing": self.spacing, "seed": self.seed,
                "class": self.klass, "prompts": self.prompts, "guidance": self.guidance}

    def wire(self) -> None:
        """A new sampler resets the spacing; Generate samples (the API's /sample), Stop ends it (/stop)."""
        # a new sampler brings its own spacing, as on the command line
        self.sampler.input(lambda: "auto", None, self.spacing, queue=False, api_visibility="private")
        inputs = [self.page.run, self.page.checkpoint, self.sampler, self.steps, self.spacing, self.seed, self.n,
                  self.klass, self.prompts, self.guidance]
        outputs = [self.x_t, self.x0, self.status, self.grid, self.png, self.npz]
        job = self.go.click(sample_handler(self.page.workdir), inputs, outputs, api_name="sample", **NETWORK)
        self.halt.click(stop_handler(), None, None, cancels=[job], queue=False, api_name="stop")

"""The Edit tab: a training image or an upload in a mask editor, then SDEdit, inpainting or interpolation."""

from __future__ import annotations

from typing import Any

from .. import gradio
from ..handlers.edit import edit_source, inpaint, interpolate, sdedit
from ..jobs.inputs import MAX_UPLOAD_MB
from .common import NETWORK, SHOWN, Page

EDITOR_HEIGHT = 300


class EditTab:
    """The Edit tab's components, laid out on construction, and `load_picture`: the settings of the event that loads
    the picture to edit into the editor and the page's state (also run when a run is picked)."""

    def __init__(self, page: Page):
        gr = gradio()
        self.page = page
        with gr.Tab("Edit", id="edit"):
            with gr.Row():
                with gr.Column(min_width=260):
                    self.source = gr.Radio(["training image", "upload"], value="training image",
                                                label="Picture from")
                    self.index = gr.Number(0, precision=0, minimum=0, label="Training image index",
                                           elem_id="edit-index")
                    self.upload = gr.File(label=f"Upload a picture (under {MAX_UPLOAD_MB} MB)", type="filepath",
                                          file_types=["image"], elem_id="edit-upload", height=120)
                    self.use = gr.Button("Use picture", elem_id="edit-use")
                    self.seed = gr.Number(0, precision=0, label="Seed")
                    self.n = gr.Slider(1, 8, value=4, step=1, label="Edits")
                    self.klass = gr.Dropdown(["all"], value="all", label="Class (conditional runs)", visible=False,
                                             allow_custom_value=True)
                with gr.Column(scale=2):
                    self.editor = gr.ImageEditor(label="Paint the region to fill in (inpainting)", type="numpy",
                                                 sources=[], height=EDITOR_HEIGHT, elem_id="editor",
                                                 elem_classes="pixels", transforms=[],
                                                 brush=gr.Brush(colors=["rgb(255, 64, 64)"], color_mode="fixed",
                                                                default_size=16), format="png")
                    self.out = gr.Image(label="result", format="png", **SHOWN, elem_id="edit-out",
                                        elem_classes="pixels", height=200)
            self.picture = gr.State()  # the picture to edit, (1, C, H, W) at the run's size, as a nested list
            self._methods()
        self.load_picture = dict(inputs=[page.run, self.source, self.index, self.upload],
                           outputs=[self.editor, self.picture], queue=False, api_visibility="private")

    def _methods(self) -> None:
        """The row of the three edits, each with its own settings and button."""
        gr = gradio()
        with gr.Row():
            with gr.Column():
                self.strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="SDEdit strength (t0 = strength T)")
                self.sdedit_go = gr.Button("SDEdit", variant="primary", elem_id="sdedit-go")
            with gr.Column():
                with gr.Row():
                    self.resample = gr.Slider(1, 10, value=1, step=1, label="RePaint resampling")
                    self.jump = gr.Slider(1, 50, value=10, step=1, label="jump")
                self.inpaint_go = gr.Button("Inpaint", variant="primary", elem_id="inpaint-go")
            with gr.Column():
                with gr.Row():
                    self.seed_a = gr.Number(1, precision=0, label="Seed A")
                    self.seed_b = gr.Number(2, precision=0, label="Seed B")
                    self.frames = gr.Slider(2, 16, value=8, step=1, label="Frames")
                self.interpolate_go = gr.Button("Interpolate", variant="primary", elem_id="interpolate-go")

    def run_controls(self) -> dict[str, Any]:
        """The controls a run lays out, by their handlers.run.RUN_CONTROLS names."""
        return {"edit_class": self.klass}

    def wire(self) -> None:
        """Use picture loads it (the API's /edit_source); each edit's button runs it (/sdedit, /inpaint,
        /interpolate)."""
        run, ckpt = self.page.run, self.page.checkpoint
        self.use.click(edit_source, **{**self.load_picture, "api_visibility": "public"}, api_name="edit_source")
        self.sdedit_go.click(sdedit, [run, ckpt, self.picture, self.strength, self.n, self.seed, self.klass], self.out,
                          api_name="sdedit", **NETWORK)
        self.inpaint_go.click(inpaint, [run, ckpt, self.picture, self.editor, self.n, self.seed, self.klass,
                                     self.resample, self.jump], self.out, api_name="inpaint", **NETWORK)
        self.interpolate_go.click(interpolate, [run, ckpt, self.seed_a, self.seed_b, self.frames, self.klass], self.out,
                               api_name="interpolate", **NETWORK)

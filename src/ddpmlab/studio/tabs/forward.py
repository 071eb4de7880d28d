"""The Forward tab: a dataset image or an upload noised by q(x_t | x_0), redrawn whenever a control changes."""

from __future__ import annotations

from typing import Any, Sequence

from .. import gradio
from ..handlers.forward import forward_range, forward_view
from ..jobs.forward import SCHEDULE_NAMES
from ..jobs.inputs import MAX_UPLOAD_MB
from .common import SHOWN


class ForwardTab:
    """The Forward tab's components, laid out on construction, and `redraw`: the settings of the event that
    draws them (also run when a run is picked)."""

    def __init__(self, datasets: Sequence[str]):
        gr = gradio()
        with gr.Tab("Forward", id="forward"):
            with gr.Row():
                with gr.Column(min_width=260):
                    self.source = gr.Radio(["dataset", "upload"], value="dataset", label="Picture from",
                                           elem_id="forward-source")
                    self.dataset = gr.Dropdown(datasets, value=datasets[0], label="Dataset")
                    self.index = gr.Number(0, precision=0, minimum=0, label="Image index")
                    self.upload = gr.File(label=f"Upload a picture (under {MAX_UPLOAD_MB} MB)", type="filepath",
                                          file_types=["image"], elem_id="forward-upload")
                    self.schedule = gr.Dropdown(list(SCHEDULE_NAMES), value="cosine", label="Schedule")
                    self.T = gr.Number(1000, precision=0, minimum=1, maximum=10_000, label="T")
                    self.seed = gr.Number(0, precision=0, label="Noise seed")
                with gr.Column(scale=2):
                    self.t = gr.Slider(0, 1000, value=250, step=1, label="t", elem_id="forward-t")
                    with gr.Row():
                        self.x0 = gr.Image(label="x_0", format="png", **SHOWN, height=200,
                                           elem_classes="pixels")
                        self.x_t = gr.Image(label="x_t ~ q(x_t | x_0)", format="png", **SHOWN, height=200,
                                            elem_id="forward-xt", elem_classes="pixels")
                    self.text = gr.Markdown(elem_id="forward-text")
                    self.curve = gr.Image(label="signal-to-noise ratio", format="png", **SHOWN,
                                          elem_id="forward-curve")
                    self.strip = gr.Image(label="the same noise at eight t", format="png", **SHOWN,
                                          elem_classes="pixels")
        inputs = [self.source, self.dataset, self.index, self.upload, self.schedule, self.T, self.t, self.seed]
        outputs = [self.x0, self.x_t, self.strip, self.curve, self.text]
        self.redraw = dict(fn=forward_view, inputs=inputs, outputs=outputs, concurrency_id="forward",
                           concurrency_limit=2, trigger_mode="always_last", show_progress="hidden")

    def run_controls(self) -> dict[str, Any]:
        """The controls a run lays out, by their handlers.run.RUN_CONTROLS names."""
        return {"forward_T": self.T, "forward_t": self.t, "forward_schedule": self.schedule}

    def wire(self) -> None:
        """Every control redraws; t's change is the API's /forward."""
        self.t.change(**self.redraw, api_name="forward")
        for control in (self.source, self.dataset, self.index, self.upload, self.schedule, self.seed):
            control.change(**self.redraw, api_visibility="private")
        # a new T resizes the t slider first (its old value may lie beyond the new T), then redraws
        self.T.change(forward_range, self.T, self.t, queue=False, api_visibility="private").then(
            **self.redraw, api_visibility="private")

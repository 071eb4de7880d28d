"""The Run tab: what the run picked has written (loss curve, metrics, config, evaluation report, results)."""

from __future__ import annotations

from typing import Any

from .. import gradio
from ..handlers.run import records_handler
from .common import SHOWN, Page


class RunTab:
    """The Run tab's components, laid out on construction; they are filled whenever a run is picked."""

    def __init__(self, page: Page):
        gr = gradio()
        self.page = page
        with gr.Tab("Run", id="run"):
            with gr.Row():
                with gr.Column():
                    self.loss = gr.Image(label="training loss", type="filepath", **SHOWN, height=320,
                                         elem_id="run-loss", elem_classes="fit")
                    self.metrics = gr.Dataframe(label="metrics.csv (last rows)", interactive=False)
                with gr.Column():
                    self.config = gr.Code(label="config.toml", interactive=False, max_lines=40, elem_id="run-config")
            self.report = gr.Markdown(elem_id="run-report")
            self.results = gr.JSON(label="results (nll.json, alignment.json, eval.json)", visible=False)

    def show_records(self) -> dict[str, Any]:
        """The settings of the event that fills the tab from the run picked."""
        return dict(fn=records_handler(self.page.workdir), inputs=self.page.run,
                    outputs=[self.config, self.loss, self.metrics, self.report, self.results], queue=False,
                    api_visibility="private")

"""The Guidance tab's handler: a classifier-free guidance sweep over the weights typed in."""

from pathlib import Path

from ...errors import DDPMLabError
from .. import gradio
from ..jobs.sampling import guidance_stream
from ..jobs.streaming import Stopped
from .common import checkpoint_step, friendly, job_dir, need_run, settings, stop_flag


def _weights(text: str) -> list[float]:
    """Comma-separated guidance weights as numbers."""
    try:
        return [float(v) for v in (text or "").replace(" ", "").split(",") if v]
    except ValueError:
        raise DDPMLabError(f"guidance weights are comma-separated numbers such as 0,1,3,5; got {text!r}") from None


def guidance_handler(workdir: Path):
    """The Sweep button's handler: yields (the sweep's figure, status)."""
    gr = gradio()

    @friendly
    def sweep(path, step, weights, per_cell, seed, sampler, steps, spacing, prompts, request: gr.Request):
        s = settings(sampler, steps, spacing, seed, 1, None, prompts, None)
        flag = stop_flag(request)
        yield None, "starting..."
        out = job_dir(workdir) / "guidance.png"
        try:
            for item in guidance_stream(need_run(path), checkpoint_step(step), _weights(weights), int(per_cell), s,
                                        out, flag):
                if isinstance(item, tuple):
                    yield gr.skip(), f"sampling w = {item[0]:g}: {100 * item[1]:.0f}%"
                else:
                    yield str(item), f"w = {weights}: the same seeds in every block"
        except Stopped:
            yield None, "stopped"

    return sweep

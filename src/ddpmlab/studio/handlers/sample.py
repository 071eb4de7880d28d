"""The Sample tab's handler: the x_t / x0 frames of every step, then the grid and its downloads."""

import html
from pathlib import Path

from .. import gradio
from ..jobs.runs import run_facts
from ..jobs.sampling import Frame, sample_stream
from ..jobs.streaming import Stopped
from .common import checkpoint_step, friendly, job_dir, need_run, settings, stop_flag


def _frame_files(frame: Frame, folder: Path) -> tuple[str, str]:
    """A frame's two pictures as files of their own (the page fetches each while the next is being made)."""
    from PIL import Image

    names = []
    for what, picture in (("x_t", frame.x_t), ("x0", frame.x0)):
        name = folder / f"{what}_{frame.index:05d}.png"
        Image.fromarray(picture).save(name)
        names.append(str(name))
    return names[0], names[1]


def _frame_status(frame: Frame) -> str:
    return f"step {frame.index + 1}: t = {frame.t} of {frame.T}"


def sample_handler(workdir: Path):
    """The Generate button's handler: yields (x_t, x0, status, grid, PNG download, .npz download)."""
    gr = gradio()

    @friendly
    def generate(path, step, sampler, steps, spacing, seed, n, klass, prompts, guidance, request: gr.Request):
        s = settings(sampler, steps, spacing, seed, n, klass, prompts, guidance)
        from ...samplers import steps_warning

        if s.sampler and s.steps and steps_warning(s.sampler, s.steps):
            gr.Warning(html.escape(steps_warning(s.sampler, s.steps)))
        if path and not s.prompts and s.guidance and run_facts(path).text:
            gr.Warning("guidance needs a prompt to guide towards: without one, a text run samples unconditionally")
        flag = stop_flag(request)
        off = gr.update(value=None, interactive=False)
        yield None, None, "starting...", None, off, off
        shown, last = "before the first step", (None, None)
        folder = job_dir(workdir)
        try:
            for item in sample_stream(need_run(path), checkpoint_step(step), s, folder, flag):
                if isinstance(item, Frame):
                    shown, last = f"at {_frame_status(item)}", _frame_files(item, folder)
                    yield *last, _frame_status(item), gr.skip(), gr.skip(), gr.skip()
                    continue
                per = item.seconds / item.n
                text = (f"**{per:.3f} s per image** ({item.n} images in {item.seconds:.2f} s; checkpoint at "
                        f"training step {item.step})")
                yield (*last, text, str(item.png),
                       gr.update(value=str(item.png), interactive=True),
                       gr.update(value=str(item.npz), interactive=True))
        except Stopped:
            yield *last, f"stopped {shown}", None, off, off

    return generate

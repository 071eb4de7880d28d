"""The Compare tab's handler: the same seeds through two sampler settings, side by side."""

from pathlib import Path

from .. import gradio
from ..jobs.sampling import compare_stream
from ..jobs.streaming import Stopped
from .common import checkpoint_step, friendly, job_dir, need_run, settings, stop_flag


def compare_handler(workdir: Path):
    """The Compare button's handler: yields (grid A, grid B, status)."""
    gr = gradio()

    @friendly
    def compare(path, step, seed, n, klass, guidance, sampler_a, steps_a, spacing_a, sampler_b, steps_b, spacing_b,
                request: gr.Request):
        a = settings(sampler_a, steps_a, spacing_a, seed, n, klass, "", guidance)
        b = settings(sampler_b, steps_b, spacing_b, seed, n, klass, "", guidance)
        flag = stop_flag(request)
        yield None, None, "starting..."
        try:
            for item in compare_stream(need_run(path), checkpoint_step(step), a, b, job_dir(workdir), flag):
                if isinstance(item[0], str):
                    yield gr.skip(), gr.skip(), f"sampling {item[0]}: {100 * item[1]:.0f}%"
                    continue
                ra, rb = item
                text = (f"A: {a.sampler} at {a.steps} steps, {ra.seconds / ra.n:.3f} s per image; "
                        f"B: {b.sampler} at {b.steps} steps, {rb.seconds / rb.n:.3f} s per image (seed {a.seed})")
                yield str(ra.png), str(rb.png), text
        except Stopped:
            yield None, None, "stopped"

    return compare

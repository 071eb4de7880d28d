"""The page's event handlers: read the controls, call jobs, turn the results into what the components show.

Every mistake reaches the page as one line (a gr.Error toast), never as a traceback; the server keeps serving.
No `from __future__ import annotations` here: Gradio reads the `gr.Request` annotation of a handler at run time.
"""

import functools
import html
import inspect
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DDPMLabError
from . import jobs
from .figures import snr_curve

LATEST = "latest"
PICTURES: list[Path] = []  # where pictures for the page are written: [folder], set by the app
STOPS: dict[str, threading.Event] = {}  # the running job's Stop flag, per page (session)
EDITOR_SIZE = 256  # pixels the mask editor shows a picture at


def _gr():
    from . import gradio

    return gradio()


def one_line(exc: BaseException) -> str:
    if isinstance(exc, DDPMLabError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def friendly(fn: Callable) -> Callable:
    """Errors as one-line messages in the page (the library's own, or the first line of anything else)."""
    gr = _gr()

    def fail(exc: BaseException):
        if not isinstance(exc, DDPMLabError):
            traceback.print_exception(exc, file=sys.stderr)
        return gr.Error(html.escape(one_line(exc), quote=False), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except jobs.Stopped:
                return
            except gr.Error:
                raise
            except Exception as exc:
                raise fail(exc) from None
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise fail(exc) from None
    return plain


def _step(text: str | None) -> int | None:
    if text in (None, "", LATEST):
        return None
    try:
        return int(text)
    except ValueError:
        raise DDPMLabError(f"checkpoint {text!r} is not a training step; pick one from the list") from None


def _need_run(path: str | None) -> str:
    if not path:
        raise DDPMLabError("no run is open; start the studio with a run directory: ddpmlab studio runs/NAME")
    return path


def _job_dir(workdir: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=workdir))


def _stop_flag(request) -> threading.Event:
    flag = threading.Event()
    if request is not None:
        STOPS[request.session_hash] = flag
    return flag


def stop_handler():
    gr = _gr()

    def stop(request: gr.Request) -> None:
        """The Stop button: the page's running job stops at its next step."""
        flag = STOPS.get(request.session_hash)
        if flag is not None:
            flag.set()

    return stop


def _prompts(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


def settings(sampler, steps, spacing, seed, n, klass, prompts, guidance) -> jobs.SampleSettings:
    return jobs.SampleSettings(sampler=sampler or None, steps=None if steps in (None, "") else int(steps),
                               spacing=spacing or None, seed=int(seed or 0), n=int(n), klass=klass or None,
                               prompts=_prompts(prompts), guidance=None if guidance is None else float(guidance))


# ---------------------------------------------------------------- run selection


# the controls a run lays out, in the order run_changed returns their updates
RUN_CONTROLS = ("checkpoint", "summary", "sampler", "steps", "spacing", "seed", "class", "prompts", "guidance",
                "forward_T", "forward_t", "forward_schedule", "compare_class", "compare_guidance", "compare_steps_a",
                "compare_steps_b", "edit_class", "guidance_sampler", "guidance_steps", "guidance_prompts")


def run_changed(path: str | None):
    """The controls laid out for a run: its sampler settings, classes or prompts, checkpoints, and a summary."""
    gr = _gr()
    keep = {name: gr.update() for name in RUN_CONTROLS}
    keep["checkpoint"] = gr.update(choices=[LATEST], value=LATEST)
    if not path:
        keep["summary"] = ("No run is open. Start the studio with a run directory (`ddpmlab studio runs/NAME`) or "
                           "train one (`make demo`); the Forward tab works without one.")
        return tuple(keep.values())
    try:
        f = jobs.run_facts(path)
    except DDPMLabError as exc:
        keep["summary"] = f"**{html.escape(str(exc))}**"
        return tuple(keep.values())
    what = ("text-conditional" if f.text else f"{len(f.class_names)} classes" if f.conditional else "unconditional")
    shape = "x".join(str(v) for v in f.item_shape)
    summary = (f"`{f.path}`: {f.dataset}, {shape} {'images' if f.is_image else 'points'}, {what}; "
               f"{f.schedule} schedule, T = {f.T}; checkpoints at step {', '.join(map(str, f.checkpoints)) or 'none'}")
    classes = gr.update(choices=["all", *f.class_names], value="all", visible=f.conditional)
    guided = gr.update(value=f.guidance, visible=f.conditional or f.text)
    steps = gr.update(maximum=f.T, value=min(f.steps, f.T))
    short = gr.update(maximum=f.T, value=min(10, f.T))
    updates = {
        "checkpoint": gr.update(choices=[LATEST, *map(str, f.checkpoints[:-1][::-1])], value=LATEST),
        "summary": summary, "sampler": gr.update(value=f.sampler), "steps": steps,
        "spacing": gr.update(value=f.spacing), "seed": gr.update(value=f.seed), "class": classes,
        "prompts": gr.update(visible=f.text), "guidance": guided, "forward_T": gr.update(value=f.T),
        "forward_t": gr.update(maximum=f.T, value=f.T // 4),
        "forward_schedule": gr.update(value=f.schedule), "compare_class": classes, "compare_guidance": guided,
        "compare_steps_a": short, "compare_steps_b": short,
        "edit_class": gr.update(choices=["all", *f.class_names], value="all", visible=f.conditional),
        "guidance_sampler": gr.update(value=f.sampler), "guidance_steps": steps,
        "guidance_prompts": gr.update(visible=f.text),
    }
    return tuple(updates[name] for name in RUN_CONTROLS)


# ---------------------------------------------------------------- sample


def picture_file(picture: np.ndarray) -> str:
    """A picture for the page as a PNG of its own. (Gradio names pictures it is handed as arrays by their
    content, and rewrites that file each time: a page still fetching the last copy can then get half a file.)"""
    from PIL import Image

    folder = PICTURES[0] if PICTURES else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".png", dir=folder)
    with open(handle, "wb") as f:
        Image.fromarray(picture.squeeze(-1) if picture.shape[-1] == 1 else picture).save(f, format="PNG")
    return name


def _frame_files(frame: jobs.Frame, folder: Path) -> tuple[str, str]:
    """A frame's two pictures as files of their own (the page fetches each while the next is being made)."""
    from PIL import Image

    names = []
    for what, picture in (("x_t", frame.x_t), ("x0", frame.x0)):
        name = folder / f"{what}_{frame.index:05d}.png"
        Image.fromarray(picture).save(name)
        names.append(str(name))
    return names[0], names[1]


def _frame_status(frame: jobs.Frame) -> str:
    return f"step {frame.index + 1}: t = {frame.t} of {frame.T}"


def sample_handler(workdir: Path):
    gr = _gr()

    @friendly
    def generate(path, step, sampler, steps, spacing, seed, n, klass, prompts, guidance, request: gr.Request):
        s = settings(sampler, steps, spacing, seed, n, klass, prompts, guidance)
        from ..samplers import steps_warning

        if s.sampler and s.steps and steps_warning(s.sampler, s.steps):
            gr.Warning(html.escape(steps_warning(s.sampler, s.steps)))
        if path and not s.prompts and s.guidance and jobs.run_facts(path).text:
            gr.Warning("guidance needs a prompt to guide towards: without one, a text run samples unconditionally")
        flag = _stop_flag(request)
        off = gr.update(value=None, interactive=False)
        yield None, None, "starting...", None, off, off
        shown, last = "before the first step", (None, None)
        folder = _job_dir(workdir)
        try:
            for item in jobs.sample_stream(_need_run(path), _step(step), s, folder, flag):
                if isinstance(item, jobs.Frame):
                    shown, last = f"at {_frame_status(item)}", _frame_files(item, folder)
                    yield *last, _frame_status(item), gr.skip(), gr.skip(), gr.skip()
                    continue
                per = item.seconds / item.n
                text = (f"**{per:.3f} s per image** ({item.n} images in {item.seconds:.2f} s; checkpoint at "
                        f"training step {item.step})")
                yield (*last, text, str(item.png),
                       gr.update(value=str(item.png), interactive=True),
                       gr.update(value=str(item.npz), interactive=True))
        except jobs.Stopped:
            yield *last, f"stopped {shown}", None, off, off

    return generate


def compare_handler(workdir: Path):
    gr = _gr()

    @friendly
    def compare(path, step, seed, n, klass, guidance, sampler_a, steps_a, spacing_a, sampler_b, steps_b, spacing_b,
                request: gr.Request):
        a = settings(sampler_a, steps_a, spacing_a, seed, n, klass, "", guidance)
        b = settings(sampler_b, steps_b, spacing_b, seed, n, klass, "", guidance)
        flag = _stop_flag(request)
        yield None, None, "starting..."
        try:
            for item in jobs.compare_stream(_need_run(path), _step(step), a, b, _job_dir(workdir), flag):
                if isinstance(item[0], str):
                    yield gr.skip(), gr.skip(), f"sampling {item[0]}: {100 * item[1]:.0f}%"
                    continue
                ra, rb = item
                text = (f"A: {a.sampler} at {a.steps} steps, {ra.seconds / ra.n:.3f} s per image; "
                        f"B: {b.sampler} at {b.steps} steps, {rb.seconds / rb.n:.3f} s per image (seed {a.seed})")
                yield str(ra.png), str(rb.png), text
        except jobs.Stopped:
            yield None, None, "stopped"

    return compare


# ---------------------------------------------------------------- guidance


def _weights(text: str) -> list[float]:
    try:
        return [float(v) for v in (text or "").replace(" ", "").split(",") if v]
    except ValueError:
        raise DDPMLabError(f"guidance weights are comma-separated numbers such as 0,1,3,5; got {text!r}") from None


def guidance_handler(workdir: Path):
    gr = _gr()

    @friendly
    def sweep(path, step, weights, per_cell, seed, sampler, steps, spacing, prompts, request: gr.Request):
        s = settings(sampler, steps, spacing, seed, 1, None, prompts, None)
        flag = _stop_flag(request)
        yield None, "starting..."
        out = _job_dir(workdir) / "guidance.png"
        try:
            for item in jobs.guidance_stream(_need_run(path), _step(step), _weights(weights), int(per_cell), s, out,
                                             flag):
                if isinstance(item, tuple):
                    yield gr.skip(), f"sampling w = {item[0]:g}: {100 * item[1]:.0f}%"
                else:
                    yield str(item), f"w = {weights}: the same seeds in every block"
        except jobs.Stopped:
            yield None, "stopped"

    return sweep


# ---------------------------------------------------------------- forward


def _as_picture(x) -> np.ndarray:
    from ..viz import grid_image

    return grid_image(x, nrow=1, padding=0)


@friendly
def forward_view(source, dataset, index, upload, schedule, T, t, seed):
    """The Forward tab: x_0, x_t at t, the strip over t and the log-SNR curve with t marked."""
    if source == "upload":
        if not upload:
            raise DDPMLabError("upload a picture first, or choose a dataset image")
        x0 = jobs.uploaded_picture(upload, size=64 if _too_big(upload) else 0)
        what = Path(upload).name
    else:
        x0, label = jobs.dataset_image(dataset, int(index or 0))
        what = f"{dataset} #{int(index or 0)}" + (f" ({label})" if label else "")
    T, t = int(T), min(int(t), int(T))  # a t beyond a T just lowered: the slider follows at once
    r = jobs.forward(x0, schedule, T, t, int(seed or 0))
    text = (f"{what}: t = {t}, alpha_bar_t = {r.alpha_bar:.4g}, signal-to-noise ratio alpha_bar / (1 - alpha_bar) = "
            f"{np.exp(r.log_snr) if np.isfinite(r.log_snr) else float('inf'):.4g} (log-SNR {r.log_snr:.3g}); "
            f"strip at t = {', '.join(map(str, r.strip_ts))}")
    curve = snr_curve(r.curve[0], r.curve[1], t, schedule)
    return (picture_file(_as_picture(x0)), picture_file(r.x_t), picture_file(r.strip), picture_file(curve), text)


def forward_range(T):
    """The t slider for a new T: 0..T, starting at T / 4."""
    T = max(1, int(T or 1))
    return _gr().update(maximum=T, value=T // 4)


def _too_big(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return max(im.size) > 256
    except Exception:
        return False


# ---------------------------------------------------------------- edit


def _editor_value(x) -> dict:
    from ..viz import grid_image

    pic = grid_image(x, nrow=1, padding=0)
    k = max(1, EDITOR_SIZE // pic.shape[1])
    big = pic.repeat(k, 0).repeat(k, 1)
    return {"background": big, "layers": [], "composite": big}


@friendly
def edit_source(path, source, index, upload):
    """The picture to edit, at the run's size: (editor value, the picture as a list for the page's state)."""
    path = _need_run(path)
    if source == "upload":
        if not upload:
            raise DDPMLabError("upload a picture first, or choose one of the run's training images")
        x = jobs.uploaded_picture(upload)
        x = jobs.picture_for_run(path, x)
    else:
        x, _ = jobs.run_dataset_image(path, int(index or 0))
        x = jobs.picture_for_run(path, x)
    return _editor_value(x), x.numpy()


def first_edit_source(path, source, index, upload):
    """The Edit tab's picture when a run opens: its first training image, or nothing (quietly) if unavailable."""
    try:
        return edit_source.__wrapped__(path, "training image", 0, None)
    except Exception:
        return None, None


def _picture(state) -> Any:
    import torch

    if state is None:
        raise DDPMLabError("pick a picture first (the run's training images or an upload), then press Use picture")
    return torch.as_tensor(np.asarray(state, dtype=np.float32))


def _mask(editor, x):
    layers = (editor or {}).get("layers") or []
    if not layers:
        raise DDPMLabError("the mask is empty; paint the region to fill in with the brush first")
    strokes = np.max(np.stack([np.asarray(layer) for layer in layers]), axis=0)
    if strokes.ndim != 3 or strokes.shape[-1] != 4:
        raise DDPMLabError("the mask layer could not be read; paint on the picture with the brush")
    return jobs.mask_from_strokes(strokes, tuple(x.shape[-2:]))


@friendly
def sdedit(path, step, state, strength, n, seed, klass):
    return picture_file(jobs.sdedit(_need_run(path), _step(step), _picture(state), float(strength), int(n),
                                    int(seed or 0), klass))


@friendly
def inpaint(path, step, state, editor, n, seed, klass, resample, jump):
    x = _picture(state)
    return picture_file(jobs.inpaint(_need_run(path), _step(step), x, _mask(editor, x), int(n), int(seed or 0),
                                     klass, int(resample), int(jump)))


@friendly
def interpolate(path, step, seed_a, seed_b, frames, klass):
    return picture_file(jobs.interpolate(_need_run(path), _step(step), int(seed_a or 0), int(seed_b or 0),
                                         int(frames), klass))


# ---------------------------------------------------------------- run


def records_handler(workdir: Path):
    gr = _gr()

    def records(path):
        if not path:
            return "", None, None, "", gr.update(visible=False)
        try:
            r = jobs.run_records(path, _job_dir(workdir))
        except DDPMLabError as exc:
            return f"# {exc}", None, None, "", gr.update(visible=False)
        import pandas as pd

        table = pd.DataFrame(r.metrics) if r.metrics else None
        report = r.report or "No evaluation yet: `ddpmlab eval RUN` writes eval.md here."
        return (r.config, (str(r.loss_png) if r.loss_png else None), table, report,
                gr.update(value=r.results, visible=bool(r.results)))

    return records

"""What every tab's handlers share: one-line errors, the checkpoint and run pickers' values, Stop flags, job
folders, pictures written for the page, and sampling settings read from the controls."""

import functools
import html
import inspect
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import DDPMLabError
from .. import gradio
from ..jobs.sampling import SampleSettings
from ..jobs.streaming import Stopped

LATEST = "latest"
PICTURES: list[Path] = []  # where pictures for the page are written: [folder], set by the app
STOPS: dict[str, threading.Event] = {}  # the running job's Stop flag, per page (session)


def one_line(exc: BaseException) -> str:
    """An error as the page shows it: the library's own message, or the first line of anything else."""
    if isinstance(exc, DDPMLabError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def friendly(fn: Callable) -> Callable:
    """Errors as one-line messages in the page (the library's own, or the first line of anything else)."""
    gr = gradio()

    def fail(exc: BaseException):
        if not isinstance(exc, DDPMLabError):
            traceback.print_exception(exc, file=sys.stderr)
        return gr.Error(html.escape(one_line(exc), quote=False), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Stopped:
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


def checkpoint_step(text: str | None) -> int | None:
    """The checkpoint picker's value as a training step; None for the latest."""
    if text in (None, "", LATEST):
        return None
    try:
        return int(text)
    except ValueError:
        raise DDPMLabError(f"checkpoint {text!r} is not a training step; pick one from the list") from None


def need_run(path: str | None) -> str:
    """The run picker's value; a one-line error when no run is open."""
    if not path:
        raise DDPMLabError("no run is open; start the studio with a run directory: ddpmlab studio runs/NAME")
    return path


def job_dir(workdir: Path) -> Path:
    """A new folder of its own under workdir for one job's files."""
    return Path(tempfile.mkdtemp(dir=workdir))


def stop_flag(request) -> threading.Event:
    """A new Stop flag for the page's next job, where that page's Stop button finds it."""
    flag = threading.Event()
    if request is not None:
        STOPS[request.session_hash] = flag
    return flag


def stop_handler():
    """The handler of a Stop button."""
    gr = gradio()

    def stop(request: gr.Request) -> None:
        """The Stop button: the page's running job stops at its next step."""
        flag = STOPS.get(request.session_hash)
        if flag is not None:
            flag.set()

    return stop


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


def _prompts(text: str) -> tuple[str, ...]:
    """A prompts box's non-blank lines, stripped."""
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


def settings(sampler, steps, spacing, seed, n, klass, prompts, guidance) -> SampleSettings:
    """A sampling request from the controls' values (empty ones keep the run's own setting)."""
    return SampleSettings(sampler=sampler or None, steps=None if steps in (None, "") else int(steps),
                          spacing=spacing or None, seed=int(seed or 0), n=int(n), klass=klass or None,
                          prompts=_prompts(prompts), guidance=None if guidance is None else float(guidance))

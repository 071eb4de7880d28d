"""The Edit tab's handlers: the picture to edit (with its mask editor), SDEdit, inpainting, interpolation."""

from typing import Any

import numpy as np

from ...errors import DDPMLabError
from ..jobs import editing
from ..jobs.inputs import mask_from_strokes, picture_for_run, run_dataset_image, uploaded_picture
from .common import checkpoint_step, friendly, need_run, picture_file

EDITOR_SIZE = 256  # pixels the mask editor shows a picture at


def _editor_value(x) -> dict:
    """The mask editor's value for a (1, C, H, W) picture: it as background, scaled up by a whole factor."""
    from ...viz import grid_image

    pic = grid_image(x, nrow=1, padding=0)
    k = max(1, EDITOR_SIZE // pic.shape[1])
    big = pic.repeat(k, 0).repeat(k, 1)
    return {"background": big, "layers": [], "composite": big}


@friendly
def edit_source(path, source, index, upload):
    """The picture to edit, at the run's size: (editor value, the picture as a list for the page's state)."""
    path = need_run(path)
    if source == "upload":
        if not upload:
            raise DDPMLabError("upload a picture first, or choose one of the run's training images")
        x = uploaded_picture(upload)
        x = picture_for_run(path, x)
    else:
        x, _ = run_dataset_image(path, int(index or 0))
        x = picture_for_run(path, x)
    return _editor_value(x), x.numpy()


def first_edit_source(path, source, index, upload):
    """The Edit tab's picture when a run opens: its first training image, or nothing (quietly) if unavailable."""
    try:
        return edit_source.__wrapped__(path, "training image", 0, None)
    except Exception:
        return None, None


def _picture(state) -> Any:
    """The picture kept in the page's state as a (1, C, H, W) tensor."""
    import torch

    if state is None:
        raise DDPMLabError("pick a picture first (the run's training images or an upload), then press Use picture")
    return torch.as_tensor(np.asarray(state, dtype=np.float32))


def _mask(editor, x):
    """The mask painted in the editor, at the picture's size: (1, 1, H, W), 1 = fill in."""
    layers = (editor or {}).get("layers") or []
    if not layers:
        raise DDPMLabError("the mask is empty; paint the region to fill in with the brush first")
    strokes = np.max(np.stack([np.asarray(layer) for layer in layers]), axis=0)
    if strokes.ndim != 3 or strokes.shape[-1] != 4:
        raise DDPMLabError("the mask layer could not be read; paint on the picture with the brush")
    return mask_from_strokes(strokes, tuple(x.shape[-2:]))


# The three edit buttons. (No docstrings: Gradio would publish them as the API endpoints' descriptions.)


@friendly
def sdedit(path, step, state, strength, n, seed, klass):
    # the input, it noised, then n edits
    return picture_file(editing.sdedit(need_run(path), checkpoint_step(step), _picture(state), float(strength),
                                       int(n), int(seed or 0), klass))


@friendly
def inpaint(path, step, state, editor, n, seed, klass, resample, jump):
    # the input, the masked input, then n fills of the painted region
    x = _picture(state)
    return picture_file(editing.inpaint(need_run(path), checkpoint_step(step), x, _mask(editor, x), int(n),
                                        int(seed or 0), klass, int(resample), int(jump)))


@friendly
def interpolate(path, step, seed_a, seed_b, frames, klass):
    # the strip of decodes between two seeds' noise
    return picture_file(editing.interpolate(need_run(path), checkpoint_step(step), int(seed_a or 0),
                                            int(seed_b or 0), int(frames), klass))

"""Editing jobs on image runs, as `ddpmlab edit`, `inpaint` and `interpolate` draw them: SDEdit, inpainting
(RePaint) and interpolation between two seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ConfigError
from .runs import open_run
from .streaming import NETWORK


def _edit_run(path: str | Path, step: int | None, seed: int, klass: str | None, prompt: str = ""):
    """The run to edit with (a ConfigError for a 2D run), and the class label to edit towards (None: none)."""
    from ... import sampling as S
    from ...prompting import with_prompts

    run = with_prompts(open_run(path, step), [prompt] if prompt.strip() else None)
    if not run.is_image:
        raise ConfigError(f"{run.path} models 2D points; editing needs an image run")
    run = S.with_sample_settings(run, seed=int(seed))
    label = None
    if klass not in (None, "", "all") and run.cfg.model.num_classes and not run.cfg.model.context_dim:
        label = int(S.class_labels(run, klass, 1)[0])
    return run, label


def _labels(label: int | None, n: int):
    """n copies of one class label as a (n,) tensor, or None."""
    import torch

    return None if label is None else torch.full((n,), label, dtype=torch.long)


def sdedit(path, step, image, strength: float, n: int, seed: int, klass: str | None) -> np.ndarray:
    """`ddpmlab edit`'s grid: the input, it noised to t0 = strength T, then n edits."""
    import torch

    from ... import edit
    from ...viz import grid_image

    run, label = _edit_run(path, step, seed, klass)
    with NETWORK:
        noised, edits = edit.sdedit(run, image, float(strength), int(n), _labels(label, int(n)))
    return grid_image(torch.cat([image, noised[:1], edits]), nrow=int(n) + 2)


def inpaint(path, step, image, mask, n: int, seed: int, klass: str | None, resample: int = 1,
            jump: int = 10) -> np.ndarray:
    """`ddpmlab inpaint`'s grid: the input, the masked input, then n fills. mask: (1, 1, H, W), 1 = fill in."""
    import torch

    from ... import edit
    from ...viz import grid_image

    if mask.sum() == 0:
        raise ConfigError("the mask is empty; paint the region to fill in with the brush first")
    run, label = _edit_run(path, step, seed, klass)
    with NETWORK:
        filled = edit.inpaint(run, image, mask, int(n), int(jump), int(resample), _labels(label, int(n)))
    shown = image * (1 - mask)
    return grid_image(torch.cat([image, shown, filled]), nrow=int(n) + 2)


def interpolate(path, step, seed_a: int, seed_b: int, frames: int, klass: str | None) -> np.ndarray:
    """`ddpmlab interpolate`'s strip: DDIM decodes of the slerp between two seeds' noise."""
    from ... import edit
    from ...viz import grid_image

    run, label = _edit_run(path, step, 0, klass)
    with NETWORK:
        strip = edit.interpolate(run, int(seed_a), int(seed_b), int(frames), label)
    return grid_image(strip, nrow=int(frames))

"""Sampling jobs: one request with its per-step frames, the same seeds through two settings, a guidance sweep.

Each draws through sampling.generate as `ddpmlab sample` does, so the same settings and seed give the same
pictures byte for byte.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ...errors import ConfigError
from .runs import open_run
from .streaming import stream

MOST_IMAGES = 64  # images per sampling request in the page


@dataclass(frozen=True)
class SampleSettings:
    """One sampling request as the page asks it; None keeps the run's own setting."""

    sampler: str | None = None
    steps: int | None = None
    spacing: str | None = None
    seed: int = 0
    n: int = 16
    klass: str | None = None  # conditional runs: a class name or index, or "all" (one row per class)
    prompts: tuple[str, ...] = ()  # text runs: one grid row per prompt
    guidance: float | None = None


@dataclass(frozen=True)
class Frame:
    """One denoising step of the first batch: t, and x_t beside the network's x0 estimate, as pictures."""

    index: int
    t: int
    T: int
    x_t: np.ndarray  # (H, W, 3) uint8
    x0: np.ndarray


@dataclass(frozen=True)
class Samples:
    """A finished request: the grid PNG and the .npz, as `ddpmlab sample` writes them."""

    png: Path
    npz: Path
    n: int
    seconds: float
    step: int  # the checkpoint's training step


def prepare(path: str | Path, step: int | None, s: SampleSettings):
    """The run with the request's settings and the labels to sample, checked as `ddpmlab sample` checks them."""
    from ... import sampling as S
    from ...prompting import with_prompts
    from ...samplers import SAMPLERS

    if not 1 <= s.n <= MOST_IMAGES:
        raise ConfigError(f"number of images must be between 1 and {MOST_IMAGES}, got {s.n}")
    if s.sampler is not None and s.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {s.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if s.steps is not None and s.steps < 1:
        raise ConfigError(f"steps must be at least 1, got {s.steps}")
    prompts = [p for p in s.prompts if p.strip()]
    if prompts and s.n % len(prompts):
        raise ConfigError(f"{s.n} images do not split into {len(prompts)} prompt rows; give a multiple of "
                          f"{len(prompts)}")
    run = open_run(path, step)
    run = with_prompts(run, prompts or None)
    guidance = s.guidance if (run.cfg.model.num_classes and not run.cfg.model.context_dim) or run.prompts else None
    run = S.with_sample_settings(run, sampler=s.sampler, steps=s.steps, spacing=s.spacing, seed=s.seed,
                                 guidance=guidance)
    S.check_guidance(run, run.cfg.sample.guidance)
    klass = s.klass if run.cfg.model.num_classes and not run.cfg.model.context_dim else None
    return run, S.class_labels(run, klass, s.n)


def _draw(run, n: int, labels, callback) -> Any:
    """sampling.generate, `ddpmlab sample`'s path for n within one batch, with a per-step callback."""
    from ...sampling import generate

    return generate(run, n, labels=labels, callback=callback)


def picture(run, x, labels=None) -> np.ndarray:
    """A batch as one picture: an image grid (one row per class) or a scatter of 2D points."""
    from ... import viz

    if run.is_image:
        return viz.grid_image(x, nrow=_columns(labels, len(x)))
    return viz.scatter_frame(x, labels=labels)


def _columns(labels, n: int) -> int:
    """Grid columns: one row per class when every class has as many images, else a square-ish grid."""
    if labels is not None and n > 1 and labels.unique().numel() > 1:
        per = int((labels == labels[0]).sum())
        if all(int((labels == c).sum()) == per for c in labels.unique()):
            return per
    return max(1, int(round(n ** 0.5)))


def sample_stream(path: str | Path, step: int | None, s: SampleSettings, out_dir: Path,
                  stop: threading.Event) -> Iterator[Frame | Samples]:
    """Frames of the first batch at every step, then the grid PNG and .npz written as `ddpmlab sample` does."""
    from ...sample_files import write_samples

    run, labels = prepare(path, step, s)
    shown = labels[: run.cfg.sample.batch_size] if labels is not None else None
    timer = {}

    def work(callback):
        timer["start"] = time.perf_counter()
        x = _draw(run, s.n, labels, callback)
        timer["seconds"] = time.perf_counter() - timer["start"]
        return x

    for kind, item in stream(work, stop):
        if kind == "step":
            i, t, x_t, x0 = item
            yield Frame(i, t, run.schedule.T, picture(run, x_t, shown), picture(run, x0, shown))
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            png = out_dir / "samples.png"
            write_samples(run, item, png, labels)
            yield Samples(png, png.with_suffix(".npz"), s.n, timer["seconds"], run.step)


def compare_stream(path: str | Path, step: int | None, a: SampleSettings, b: SampleSettings, out_dir: Path,
                   stop: threading.Event) -> Iterator[tuple[str, float] | tuple[Samples, Samples]]:
    """The same seeds through two settings: ("A" or "B", progress in [0, 1]) while sampling, then both grids."""
    done = []
    for name, s in (("A", a), ("B", b)):
        for item in sample_stream(path, step, s, out_dir / name, stop):
            if isinstance(item, Frame):
                yield name, 1.0 - item.t / item.T
            else:
                done.append(item)
    yield done[0], done[1]


def guidance_stream(path: str | Path, step: int | None, weights: Sequence[float], per_cell: int,
                    s: SampleSettings, out: Path, stop: threading.Event) -> Iterator[tuple[float, float] | Path]:
    """sample_files.guidance_sweep's figure (a row per class or prompt, a block per w), with progress and Stop.

    Yields (w, progress in [0, 1]) while sampling, then the PNG's path.
    """
    from ...viz import guidance_figure

    if not weights or any(w < 0 or w != w for w in weights):
        raise ConfigError(f"guidance weights must be non-negative numbers, got {list(weights)}")
    if not 1 <= per_cell <= 16:
        raise ConfigError(f"images per class must be between 1 and 16, got {per_cell}")
    run, _ = prepare(path, step, dataclasses.replace(s, n=max(1, len(s.prompts)), klass=None, guidance=None))
    if not run.cfg.model.num_classes and not run.prompts:
        raise ConfigError(f"the guidance sweep needs a class-conditional run or prompts; {run.path} "
                          "was trained without labels")
    import torch

    rows = list(run.prompts) or list(run.class_names)
    labels = None if run.prompts else torch.arange(len(rows)).repeat_interleave(per_cell)
    n = len(rows) * per_cell
    blocks = []
    for w in weights:
        guided = dataclasses.replace(run, cfg=dataclasses.replace(
            run.cfg, sample=dataclasses.replace(run.cfg.sample, guidance=w)))
        for kind, item in stream(lambda cb, g=guided: _draw(g, n, labels, cb), stop):
            if kind == "step":
                yield w, (len(blocks) + 1.0 - item[1] / run.schedule.T) / len(weights)
            else:
                blocks.append(item)
    out.parent.mkdir(parents=True, exist_ok=True)
    guidance_figure(list(weights), blocks, per_cell, rows, out)
    yield out

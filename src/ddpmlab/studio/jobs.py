"""Every call the studio makes into the ddpmlab library, in one module: runs, sampling with per-step frames,
the forward process, guidance sweeps, edits and a run's records.

Sampling goes through sampling.generate, as `ddpmlab sample` does (with a callback for the frames), and writes
with sample_files.write_samples, so the same settings and seed give the same PNG byte for byte.
A job on a network holds NETWORK; the page's queue runs one at a time, and the lock keeps a stopped job that is
still unwinding from overlapping the next one.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError, DataError, RunError

NETWORK = threading.Lock()
MAX_UPLOAD_MB = 8  # the page refuses bigger uploads; jobs refuse them too (the API takes files directly)
MOST_IMAGES = 64  # images per sampling request in the page
IMAGE_FORMATS = "PNG, JPEG, BMP, GIF, WebP or TIFF"


class Stopped(Exception):
    """Raised inside a sampler's callback when the user pressed Stop."""


# ---------------------------------------------------------------- runs


def find_runs(paths: Sequence[str], root: str | Path = "runs") -> tuple[list[Path], list[str]]:
    """The run directories to offer (paths named, else every run under root), and one line per path refused."""
    from .. import checkpoint as ckpt

    found, notes = [], []
    if not paths:
        base = Path(root)
        candidates = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        return [p for p in candidates if ckpt.is_run(p)], notes
    for text in paths:
        path = Path(text)
        try:
            ckpt.read_config(path)
        except RunError as exc:
            notes.append(f"skipped {text}: {exc}")
            continue
        except ConfigError as exc:
            notes.append(f"skipped {text}: its config.toml is invalid ({exc})")
            continue
        if path.resolve() not in [p.resolve() for p in found]:
            found.append(path)
    return found, notes


@dataclass(frozen=True)
class RunFacts:
    """What the page needs to lay out its controls for a run, read without loading the network."""

    path: Path
    is_image: bool
    item_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    conditional: bool  # class labels
    text: bool  # prompts
    sampler: str
    steps: int
    spacing: str
    seed: int
    guidance: float
    T: int
    schedule: str
    dataset: str
    checkpoints: tuple[int, ...]  # snapshot steps, oldest first
    batch_size: int


def run_facts(path: str | Path) -> RunFacts:
    from .. import checkpoint as ckpt

    path = Path(path)
    cfg = ckpt.read_config(path)
    meta = ckpt.read_meta(path)
    steps = tuple(_snapshot_step(p) for p in ckpt.snapshots(path))
    s = cfg.sample
    return RunFacts(path, len(meta["item_shape"]) == 3, meta["item_shape"], meta["class_names"],
                    bool(cfg.model.num_classes) and not cfg.model.context_dim, bool(cfg.model.context_dim),
                    s.sampler, s.steps, s.spacing, s.seed, s.guidance, cfg.diffusion.T, cfg.diffusion.schedule,
                    cfg.data.name, steps, s.batch_size)


def _snapshot_step(folder: Path) -> int:
    return int(folder.name.split("_", 1)[1])


@lru_cache(maxsize=4)
def _loaded(path: str, step: int | None, stamp: float):
    """The run with the network of snapshot `step` (None: the newest); stamp makes a retrained run reload."""
    import copy

    from .. import checkpoint as ckpt
    from ..sampling import load_run

    run = load_run(path)
    if step is None or step == run.step:
        return run
    folder = Path(path) / ckpt.CHECKPOINTS / f"step_{step:09d}"
    if not folder.is_dir():
        raise RunError(f"{path} has no checkpoint at step {step}; pick one of its checkpoints")
    model = copy.deepcopy(run.model)
    got = ckpt.load_weights(folder / ckpt.EMA, model)
    return dataclasses.replace(run, model=model.eval(), step=got)


def open_run(path: str | Path, step: int | None = None):
    """The LoadedRun for a run directory (cached); a RunError names what is missing."""
    from .. import checkpoint as ckpt

    ckpt.read_config(path)  # the one-line error for a path that is not (or no longer) a run
    stamp = max((Path(path) / f).stat().st_mtime for f in (ckpt.CONFIG, ckpt.EMA) if (Path(path) / f).exists())
    return _loaded(str(path), step, stamp)


# ---------------------------------------------------------------- sampling


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
    from .. import sampling as S
    from ..prompting import with_prompts
    from ..samplers import SAMPLERS

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
    from ..sampling import generate

    return generate(run, n, labels=labels, callback=callback)


def picture(run, x, labels=None) -> np.ndarray:
    """A batch as one picture: an image grid (one row per class) or a scatter of 2D points."""
    from .. import viz

    if run.is_image:
        return viz.grid_image(x, nrow=_columns(labels, len(x)))
    return viz.scatter_frame(x, labels=labels)


def _columns(labels, n: int) -> int:
    if labels is not None and n > 1 and labels.unique().numel() > 1:
        per = int((labels == labels[0]).sum())
        if all(int((labels == c).sum()) == per for c in labels.unique()):
            return per
    return max(1, int(round(n ** 0.5)))


def stream(work: Callable[[Callable], Any], stop: threading.Event) -> Iterator[tuple[str, Any]]:
    """Run work(callback) on a worker thread; yield ("step", (i, t, x_t, x0)) while it runs, then ("done", result).

    Steps that arrive faster than the page takes them are skipped to the newest one (the last step is always
    shown). Setting stop, or closing the iterator, makes the callback raise Stopped at the next step; the worker
    is waited for before this returns.
    """
    events: queue.Queue = queue.Queue()
    closed = threading.Event()  # this iterator was closed early: its work is not wanted any more

    def callback(i, t, x, x0):
        if stop.is_set() or closed.is_set():
            raise Stopped
        events.put(("step", (i, int(t), x.detach().float().cpu().clone(), x0.detach().float().cpu().clone())))

    def target():
        with NETWORK:
            try:
                events.put(("done", work(callback)))
            except BaseException as exc:  # handed to the page's thread, which raises it there
                events.put(("error", exc))

    worker = threading.Thread(target=target, name="ddpmlab-studio-job", daemon=True)
    worker.start()
    try:
        later = None
        while True:
            kind, item = later or events.get()
            later = None
            while kind == "step" and not events.empty():  # skip to the newest step, but show the last one
                later = events.get()
                if later[0] != "step":
                    break
                item, later = later[1], None
            if kind == "error":
                raise item
            yield kind, item
            if kind == "done":
                return
    finally:
        closed.set()
        worker.join()


def sample_stream(path: str | Path, step: int | None, s: SampleSettings, out_dir: Path,
                  stop: threading.Event) -> Iterator[Frame | Samples]:
    """Frames of the first batch at every step, then the grid PNG and .npz written as `ddpmlab sample` does."""
    from ..sample_files import write_samples

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
    from ..viz import guidance_figure

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


# ---------------------------------------------------------------- the forward process


SCHEDULE_NAMES = ("linear", "cosine", "sigmoid", "geometric")


@lru_cache(maxsize=4)
def _dataset(name: str, root: str, image_size: int):
    from ..config import DataConfig
    from ..data import load_dataset

    data = load_dataset(DataConfig(name=name, root=root, image_size=image_size))
    if not data.is_image:
        raise DataError(f"{name} holds 2D points, not images; pick an image dataset or upload a picture")
    return data


def dataset_image(name: str, index: int, root: str = "data", image_size: int = 0):
    """Image `index` of a dataset as (1, C, H, W) in [-1, 1], and its class name ('' if none)."""
    data = _dataset(name, root, image_size)
    if not 0 <= index < len(data.x):
        raise ConfigError(f"{name} has {len(data.x)} images; pick an index in [0, {len(data.x) - 1}]")
    label = "" if data.y is None or not data.class_names else data.class_names[int(data.y[index])]
    return data.x[index : index + 1], label


def run_dataset_image(path: str | Path, index: int):
    """Image `index` of the data a run was trained on, at the run's image size."""
    from .. import checkpoint as ckpt

    d = ckpt.read_config(path).data
    return dataset_image(d.name, index, d.root, d.image_size)


def uploaded_picture(file: str | Path, size: int = 0, channels: int = 0):
    """An uploaded picture as (1, C, H, W) in [-1, 1], checked for size and format first."""
    from ..pictures import load_picture

    path = Path(file)
    if path.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024:
        raise DataError(f"{path.name} is {path.stat().st_size / 2**20:.1f} MB; upload a picture under "
                        f"{MAX_UPLOAD_MB} MB")
    try:
        return load_picture(path, size=size, channels=channels)
    except DataError:
        raise DataError(f"{path.name} is not an image; upload a {IMAGE_FORMATS} file") from None


@dataclass(frozen=True)
class Forward:
    """q(x_t | x_0) for one picture: x_t at the chosen t, a strip over t, and the numbers at t."""

    x_t: np.ndarray  # (H, W, C) uint8
    strip: np.ndarray
    strip_ts: tuple[int, ...]
    alpha_bar: float
    log_snr: float
    curve: tuple[np.ndarray, np.ndarray]  # t = 1..T and log-SNR(t)


def forward(x0, schedule: str, T: int, t: int, seed: int = 0) -> Forward:
    """x_t = alpha_t x_0 + sigma_t eps with one eps (from seed) for every t, as `ddpmlab forward` draws it."""
    import torch

    from ..diffusion import q_sample
    from ..schedules import make_schedule
    from ..viz import grid_image

    if not 1 <= T <= 10_000:
        raise ConfigError(f"T must be between 1 and 10000, got {T}")
    if not 0 <= t <= T:
        raise ConfigError(f"t must lie in [0, T={T}], got {t}")
    try:
        sched = make_schedule(schedule, T)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    ts = tuple(sorted({round(k * T / 7) for k in range(8)}))
    times = torch.tensor([t, *ts])
    xs = q_sample(sched, x0.expand(len(times), *x0.shape[1:]), times, eps.expand(len(times), *x0.shape[1:]))
    lam = sched.log_snr
    return Forward(grid_image(xs[:1], nrow=1, padding=0), grid_image(xs[1:], nrow=len(ts)), ts,
                   float(sched.alpha_bar[t]), float(lam[t]),
                   (np.arange(1, T + 1), lam[1:].numpy()))


# ---------------------------------------------------------------- editing


def _edit_run(path: str | Path, step: int | None, seed: int, klass: str | None, prompt: str = ""):
    from .. import sampling as S
    from ..prompting import with_prompts

    run = with_prompts(open_run(path, step), [prompt] if prompt.strip() else None)
    if not run.is_image:
        raise ConfigError(f"{run.path} models 2D points; editing needs an image run")
    run = S.with_sample_settings(run, seed=int(seed))
    label = None
    if klass not in (None, "", "all") and run.cfg.model.num_classes and not run.cfg.model.context_dim:
        label = int(S.class_labels(run, klass, 1)[0])
    return run, label


def _labels(label: int | None, n: int):
    import torch

    return None if label is None else torch.full((n,), label, dtype=torch.long)


def picture_for_run(path: str | Path, x):
    """A picture resized and converted to what the run's network takes: (1, C, H, W)."""
    import torch.nn.functional as F

    c, h, w = run_facts(path).item_shape
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True) if c == 1 else x.expand(-1, c, -1, -1) if x.shape[1] == 1 else x[:, :c]
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="area")
    return x


def sdedit(path, step, image, strength: float, n: int, seed: int, klass: str | None) -> np.ndarray:
    """`ddpmlab edit`'s grid: the input, it noised to t0 = strength T, then n edits."""
    import torch

    from .. import edit
    from ..viz import grid_image

    run, label = _edit_run(path, step, seed, klass)
    with NETWORK:
        noised, edits = edit.sdedit(run, image, float(strength), int(n), _labels(label, int(n)))
    return grid_image(torch.cat([image, noised[:1], edits]), nrow=int(n) + 2)


def inpaint(path, step, image, mask, n: int, seed: int, klass: str | None, resample: int = 1,
            jump: int = 10) -> np.ndarray:
    """`ddpmlab inpaint`'s grid: the input, the masked input, then n fills. mask: (1, 1, H, W), 1 = fill in."""
    import torch

    from .. import edit
    from ..viz import grid_image

    if mask.sum() == 0:
        raise ConfigError("the mask is empty; paint the region to fill in with the brush first")
    run, label = _edit_run(path, step, seed, klass)
    with NETWORK:
        filled = edit.inpaint(run, image, mask, int(n), int(jump), int(resample), _labels(label, int(n)))
    shown = image * (1 - mask)
    return grid_image(torch.cat([image, shown, filled]), nrow=int(n) + 2)


def interpolate(path, step, seed_a: int, seed_b: int, frames: int, klass: str | None) -> np.ndarray:
    """`ddpmlab interpolate`'s strip: DDIM decodes of the slerp between two seeds' noise."""
    from .. import edit
    from ..viz import grid_image

    run, label = _edit_run(path, step, 0, klass)
    with NETWORK:
        strip = edit.interpolate(run, int(seed_a), int(seed_b), int(frames), label)
    return grid_image(strip, nrow=int(frames))


def mask_from_strokes(strokes: np.ndarray, size: tuple[int, int]):
    """A painted layer (H', W', 4) uint8 (alpha > 0 where painted) as a (1, 1, H, W) mask at the run's size."""
    import torch
    import torch.nn.functional as F

    alpha = torch.from_numpy((strokes[..., -1] > 0).astype(np.float32))[None, None]
    return (F.interpolate(alpha, size=size, mode="area") > 0).float()


# ---------------------------------------------------------------- a run's records


@dataclass(frozen=True)
class RunRecords:
    config: str
    loss_png: Path | None
    metrics: list[dict[str, str]]  # the last rows of metrics.csv
    report: str  # eval.md, or ""
    results: dict[str, Any]  # nll.json / alignment.json, by file name
    checkpoints: tuple[int, ...]


def run_records(path: str | Path, out_dir: Path, rows: int = 12) -> RunRecords:
    """config.toml, the loss curve (drawn from metrics.csv), the last metrics rows, eval.md and other results."""
    import csv

    from .. import checkpoint as ckpt
    from ..viz import plot_loss

    path = Path(path)
    ckpt.read_config(path)
    config = (path / ckpt.CONFIG).read_text()
    metrics, loss_png = [], None
    if (path / ckpt.METRICS).is_file():
        with open(path / ckpt.METRICS) as f:
            metrics = list(csv.DictReader(f))
        out_dir.mkdir(parents=True, exist_ok=True)
        loss_png = out_dir / "loss.png"
        plot_loss(path / ckpt.METRICS, loss_png)
        if not loss_png.is_file():
            loss_png = None
    report = (path / "eval.md").read_text() if (path / "eval.md").is_file() else ""
    results = {}
    for name in ("eval.json", "nll.json", "alignment.json"):
        if (path / name).is_file():
            try:
                results[name] = json.loads((path / name).read_text())
            except ValueError:
                results[name] = {"error": f"{name} is not valid JSON"}
    return RunRecords(config, loss_png, metrics[-rows:], report, results,
                      tuple(_snapshot_step(p) for p in ckpt.snapshots(path)))


def sampler_names() -> list[str]:
    from ..samplers import SAMPLERS

    return list(SAMPLERS)


def spacing_names() -> list[str]:
    from ..schedules import SPACINGS

    return ["auto", *SPACINGS]

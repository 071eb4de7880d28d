"""Load a run, build its denoiser, sample in batches, and write grids, arrays, trajectories and GIFs."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import checkpoint as ckpt
from . import distributed
from .config import Config, validate
from .errors import ConfigError, RunError
from .models import build_model
from .samplers.run import sample_from_config
from .schedules import Schedule, schedule_from_config

@dataclass
class LoadedRun:
    """A trained run ready to sample: config, network (eval mode), schedule and data shape."""

    path: Path
    cfg: Config
    model: torch.nn.Module
    schedule: Schedule
    item_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    step: int
    device: torch.device

    @property
    def is_image(self) -> bool:
        return len(self.item_shape) == 3


def load_run(run_dir: str | Path, *, weights: Literal["ema", "model"] = "ema", device: str = "auto") -> LoadedRun:
    """Read config.toml and meta.json, build the network and load its (EMA) weights.

    Under torchrun, process r runs on cuda:LOCAL_RANK (or the CPU); see distributed.device_for.
    """
    run_dir = Path(run_dir)
    cfg = ckpt.read_config(run_dir)
    meta = ckpt.read_meta(run_dir)
    item_shape = tuple(int(v) for v in meta["item_shape"])
    dev = distributed.device_for(device)
    model = build_model(cfg, item_shape)
    source = ckpt.latest_checkpoint(run_dir)
    step = ckpt.load_weights(source / (ckpt.EMA if weights == "ema" else ckpt.MODEL), model)
    model.to(dev).eval()
    return LoadedRun(run_dir, cfg, model, schedule_from_config(cfg.diffusion), item_shape, tuple(meta["class_names"]), step, dev)


def with_sample_settings(run: LoadedRun, **settings: Any) -> LoadedRun:
    """A copy of run whose cfg.sample has the given (non-None) settings, range-checked."""
    updates = {k: v for k, v in settings.items() if v is not None}
    if not updates:
        return run
    try:
        cfg = validate(dataclasses.replace(run.cfg, sample=dataclasses.replace(run.cfg.sample, **updates)))
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    return dataclasses.replace(run, cfg=cfg)


def class_labels(run: LoadedRun, which: str | None, n: int) -> torch.Tensor | None:
    """Labels for n samples: None/'all' -> every class in turn (n // K rows), an index or a class name -> that class."""
    k = run.cfg.model.num_classes
    if which is None and not k:
        return None
    if not k:
        raise ConfigError(f"--class needs a class-conditional run; {run.path} was trained without labels "
                          "(model.num_classes = 0)")
    if which is None or which == "all":
        # n labels in class blocks of (nearly) equal size, every class present when n >= k
        return torch.arange(n) * k // n if n >= k else torch.arange(n)
    names = [c.lower() for c in run.class_names]
    if which.lower() in names:
        c = names.index(which.lower())
    else:
        try:
            c = int(which)
        except ValueError:
            raise ConfigError(f"--class {which!r} is neither a class index nor one of {', '.join(run.class_names)}") from None
    if not 0 <= c < k:
        raise ConfigError(f"--class {c} is outside [0, {k}); this run has {k} classes")
    return torch.full((n,), c, dtype=torch.long)


def check_guidance(run: LoadedRun, w: float) -> None:
    if w and not run.cfg.model.num_classes:
        raise ConfigError(f"--guidance needs a class-conditional run; {run.path} was trained without labels "
                          "(model.num_classes = 0)")
    if w < 0 or w != w:
        raise ConfigError(f"--guidance must be a non-negative number, got {w}")


@torch.no_grad()
def sample(run: LoadedRun, n: int, *, labels: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
    """n samples (n, *item_shape) in data space ([-1, 1] for images) with run.cfg.sample's settings.

    labels: (n,) classes for a conditional run (default: every class in turn); guidance is cfg.sample.guidance.
    Under torchrun the processes share the work and each returns all n samples (the same as one process would).
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    check_guidance(run, run.cfg.sample.guidance)
    return sample_from_config(run.cfg, run.model, run.schedule, run.item_shape, n, run.device, labels=labels,
                              guidance=run.cfg.sample.guidance, progress=progress)


@torch.no_grad()
def record_trajectory(run: LoadedRun, n: int, labels: torch.Tensor | None = None
                      ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Sample n items in one batch, keeping every step: (ts, x_t: (K, n, ...), x0_hat: (K, n, ...)).

    Samples equal those of sample() with the same seed: the first n of them.
    """
    ts, xs, x0s = [], [], []

    def keep(i: int, t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        ts.append(t)
        xs.append(x.float().cpu())
        x0s.append(x0.float().cpu())

    sample_from_config(run.cfg, run.model, run.schedule, run.item_shape, n, run.device, labels=labels,
                       guidance=run.cfg.sample.guidance, callback=keep, batch_size=n)
    return ts, torch.stack(xs), torch.stack(x0s)


def save_npz(path: Path, samples: torch.Tensor, labels: torch.Tensor | None, is_image: bool) -> None:
    """uint8 images (N, H, W, C) or float32 points (N, D), plus labels when conditional."""
    from .viz import to_uint8

    arrays: dict[str, np.ndarray] = {"images" if is_image else "points":
                                     to_uint8(samples) if is_image else samples.numpy().astype(np.float32)}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    ckpt.atomic_write(path, lambda f: f.write(buf.getvalue()))


def write_samples(run: LoadedRun, samples: torch.Tensor, out: Path, labels: torch.Tensor | None = None) -> list[Path]:
    """A PNG (grid with one row per class when conditional, or a scatter for 2D data) plus an .npz beside it.

    Only rank 0 writes (other torchrun processes return []).
    """
    from .viz import save_grid, save_scatter

    if not distributed.is_main():
        return []
    if run.is_image:
        save_grid(samples, out, nrow=_nrow(labels, len(samples)))
    else:
        save_scatter(samples, out, reference=_reference_points(run), labels=labels)
    npz = out.with_suffix(".npz")
    save_npz(npz, samples, labels, run.is_image)
    return [out, npz]


def write_reverse_process(run: LoadedRun, trajectory: Path | None, gif: Path | None,
                          labels: torch.Tensor | None = None) -> list[Path]:
    """The denoising trajectory figure (x_t and predicted x0 over time) and/or a GIF of x_t.

    Only rank 0 records and writes it (other torchrun processes return []): a trajectory is one batch.
    """
    from .viz import grid_image, save_gif, scatter_frame, trajectory_figure

    if not distributed.is_main():
        return []
    n = (8 if trajectory is not None else 16) if run.is_image else 1000
    if gif is not None and run.is_image:
        n = 16
    if labels is not None:
        labels = labels[torch.linspace(0, len(labels) - 1, n).round().long()] if len(labels) >= n else None
    ts, xs, x0s = record_trajectory(run, n, labels)
    written = []
    if trajectory is not None:
        _check_writable(trajectory)
        keep = sorted(set(round(k * (len(ts) - 1) / 9) for k in range(10)))
        if run.is_image:
            trajectory_figure([ts[k] for k in keep], xs[keep, :6], x0s[keep, :6], trajectory)
        else:
            _scatter_trajectory([ts[k] for k in keep], xs[keep], trajectory)
        written.append(trajectory)
    if gif is not None:
        _check_writable(gif)
        from .samplers.run import initial_noise

        x_T, _ = initial_noise(run.cfg.sample.seed, range(n), run.item_shape, run.device)
        states, times = torch.cat([x_T.cpu()[None], xs]), [run.schedule.T, *ts]  # start from the pure noise
        frames_idx = _frame_indices(len(times), 60)
        if run.is_image:
            frames = [grid_image(states[k], nrow=4) for k in frames_idx]
            frames = [_upscale(f, 2 if run.item_shape[-1] <= 32 else 1) for f in frames]
        else:
            frames = [scatter_frame(states[k], title=f"t = {times[k]}") for k in frames_idx]
        save_gif(frames, gif)
        written.append(gif)
    return written


def _frame_indices(total: int, most: int) -> list[int]:
    if total <= most:
        return list(range(total))
    return sorted(set(round(k * (total - 1) / (most - 1)) for k in range(most)))


def _upscale(frame: np.ndarray, k: int) -> np.ndarray:
    return frame.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else frame


def _scatter_trajectory(ts: list[int], xs: torch.Tensor, path: Path) -> None:
    from .viz import scatter_frame, _save_array

    panels = [scatter_frame(xs[k], title=f"t = {t}") for k, t in enumerate(ts)]
    _save_array(np.concatenate([np.concatenate(panels[:5], 1), np.concatenate(panels[5:10], 1)], 0)
                if len(panels) == 10 else np.concatenate(panels, 1), path)


def _check_writable(path: Path) -> None:
    if not path.parent.is_dir():
        raise ConfigError(f"output folder {path.parent} does not exist; create it or choose another path")


def _nrow(labels: torch.Tensor | None, n: int) -> int:
    """One row per class when labels come in class blocks, else a square-ish grid."""
    if labels is not None and len(labels) == n and n > 1:
        per = int((labels == labels[0]).sum())
        if labels.unique().numel() > 1 and torch.equal(labels, labels.unique().repeat_interleave(per)[:n]):
            return per
    return max(1, int(round(n ** 0.5)))


def _reference_points(run: LoadedRun) -> torch.Tensor | None:
    from .data import TOYS, toy_points

    name = run.cfg.data.name
    return toy_points(name, 2000, seed=1)[0] if name in TOYS else None


def guidance_sweep(run: LoadedRun, weights: list[float], out: Path, per_cell: int = 6) -> Path:
    """One figure: a row per class, a column block per guidance weight; the same seeds in every block."""
    import dataclasses as dc

    from .viz import guidance_figure

    if not run.cfg.model.num_classes:
        raise ConfigError("--guidance-sweep needs a class-conditional run (model.num_classes > 0)")
    k = run.cfg.model.num_classes
    labels = torch.arange(k).repeat_interleave(per_cell)
    blocks = []
    for w in weights:
        guided_run = dc.replace(run, cfg=dc.replace(run.cfg, sample=dc.replace(run.cfg.sample, guidance=w)))
        blocks.append(sample(guided_run, len(labels), labels=labels))
    if distributed.is_main():
        guidance_figure(weights, blocks, per_cell, run.class_names, out)
    return out

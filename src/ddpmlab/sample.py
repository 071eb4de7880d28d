"""Load a run, build its denoiser, sample in batches, and write grids, arrays, trajectories and GIFs."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
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
from .prompting import run_context, with_prompts
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
    prompts: tuple[str, ...] = ()  # a text run's prompts, in order, for sampling and editing (prompting.py)
    text_encoder: str = ""  # a sentence encoder directory replacing the run's own (--text-encoder)

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
    if run.cfg.model.context_dim:
        raise ConfigError(f"--class needs a class-conditional run; {run.path} is text-conditional: use --prompt")
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
    """A guidance weight needs labels or prompts to guide towards, and must be a non-negative number.

    A text run sampled without prompts draws unconditional samples (the null prompt): no guidance applies.
    """
    if w and not run.cfg.model.num_classes and not run.cfg.model.context_dim:
        raise ConfigError(f"--guidance needs a class-conditional run; {run.path} was trained without labels "
                          "(model.num_classes = 0)")
    if w < 0 or w != w:
        raise ConfigError(f"--guidance must be a non-negative number, got {w}")


@torch.no_grad()
def sample(run: LoadedRun, n: int, *, labels: torch.Tensor | None = None, prompts: list[str] | None = None,
           progress: bool = False) -> torch.Tensor:
    """n samples (n, *item_shape) in data space ([-1, 1] for images) with run.cfg.sample's settings.

    labels: (n,) classes for a conditional run (default: every class in turn); guidance is cfg.sample.guidance.
    prompts: a text run's prompts, in len(prompts) blocks of samples (default run.prompts; none: unconditional).
    Under torchrun the processes share the work and each returns all n samples (the same as one process would).
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    run = with_prompts(run, prompts)
    check_guidance(run, run.cfg.sample.guidance)
    return sample_from_config(run.cfg, run.model, run.schedule, run.item_shape, n, run.device, labels=labels,
                              guidance=run.cfg.sample.guidance, progress=progress, context=run_context(run, n))


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
                       guidance=run.cfg.sample.guidance, callback=keep, batch_size=n, context=run_context(run, n))
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


GRID_MOST = 1024  # most images drawn in a grid PNG; the .npz holds them all


def parts_dir(out: Path) -> Path:
    """Where sample_in_parts keeps finished batches until the whole set is written: OUT.parts/ beside OUT."""
    return out.with_name(out.stem + ".parts")


def _fingerprint(run: LoadedRun, n: int, labels: torch.Tensor | None, chunk: int) -> dict[str, Any]:
    """Everything that decides the samples: a rerun continues only if this is unchanged."""
    settings = dataclasses.asdict(run.cfg.sample)
    del settings["batch_size"]
    return {"run": str(run.path.resolve()), "step": run.step, "n": n, "chunk": chunk, **settings,
            **({"prompts": list(run.prompts), "text_encoder": run.text_encoder} if run.prompts else {}),
            "labels": None if labels is None else hashlib.sha256(labels.cpu().numpy().tobytes()).hexdigest()[:16]}


def sample_in_parts(run: LoadedRun, n: int, out: Path, labels: torch.Tensor | None = None, *,
                    progress: bool = False) -> tuple[torch.Tensor, int]:
    """Sample n items batch by batch, each batch written to parts_dir(out) as soon as it is done.

    A crash or Ctrl-C keeps every finished batch; calling again with the same settings samples only the
    missing ones (sample i depends only on the seed and i, so the result equals one uninterrupted call).
    Returns (all n samples as stored, how many were already on disk). Under torchrun the processes take
    alternate batches. The caller removes parts_dir(out) once the final files are written.
    """
    import json

    from tqdm.auto import tqdm

    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    check_guidance(run, run.cfg.sample.guidance)
    folder, chunk = parts_dir(out), run.cfg.sample.batch_size
    manifest = folder / "manifest.json"
    if folder.exists() and not manifest.is_file():
        raise ConfigError(f"{folder} exists but is not a sample-parts folder; move it away or choose another --out")
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise RunError(f"{manifest} is unreadable ({exc}); delete {folder} to start the sampling again") from None
        chunk = int(saved.get("chunk", chunk))  # the batch size does not change the samples; keep the parts' one
        want = _fingerprint(run, n, labels, chunk)
        changed = [k for k in sorted(set(want) | set(saved)) if want.get(k) != saved.get(k)]
        if changed:
            diff = ", ".join(f"{k}: {saved.get(k)!r} -> {want.get(k)!r}" for k in changed[:4])
            raise ConfigError(f"{folder} holds an unfinished sampling with other settings ({diff}); rerun with "
                              f"the same settings to finish it, or delete {folder}")
    elif distributed.is_main():
        folder.mkdir()
        ckpt.atomic_write(manifest, lambda f: f.write(json.dumps(_fingerprint(run, n, labels, chunk)).encode()))
    distributed.barrier()

    def part_path(start: int) -> Path:
        return folder / f"{start:09d}-{min(n, start + chunk):09d}.npz"

    starts = list(range(0, n, chunk))
    todo = [a for a in starts if not part_path(a).is_file()]
    done_before = sum(min(n, a + chunk) - a for a in starts if a not in todo)
    if done_before and distributed.is_main():
        print(f"resuming: {done_before} of {n} samples are already in {folder}")
    mine = todo[distributed.rank()::distributed.world_size()]
    context = run_context(run, n) if mine else None  # encoded once, before any batch
    for a in tqdm(mine, desc="sampling", unit="batch", disable=not progress or len(mine) < 2 or not distributed.is_main()):
        b = min(n, a + chunk)
        x = sample_from_config(run.cfg, run.model, run.schedule, run.item_shape, n, run.device, labels=labels,
                               guidance=run.cfg.sample.guidance, part=slice(a, b), context=context)
        save_npz(part_path(a), x, None if labels is None else labels[a:b], run.is_image)
    distributed.barrier()
    return torch.cat([_read_part(part_path(a), run.is_image) for a in starts]), done_before


def _read_part(path: Path, is_image: bool) -> torch.Tensor:
    try:
        with np.load(path) as z:
            arr = z["images" if is_image else "points"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise RunError(f"{path} is damaged ({exc}); delete it and rerun to sample that batch again") from None
    if is_image:  # uint8 (N, H, W, C) back to [-1, 1] (N, C, H, W): exact for the next to_uint8
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return torch.from_numpy(arr)


def write_samples(run: LoadedRun, samples: torch.Tensor, out: Path, labels: torch.Tensor | None = None) -> list[Path]:
    """A PNG (grid with one row per class when conditional, or a scatter for 2D data) plus an .npz beside it.

    The grid draws at most GRID_MOST images, evenly spread over the set; the .npz holds all of them.
    Only rank 0 writes (other torchrun processes return []).
    """
    from .viz import save_grid, save_scatter

    if not distributed.is_main():
        return []
    if run.is_image:
        shown, shown_labels = samples, labels
        if len(samples) > GRID_MOST:
            pick = torch.linspace(0, len(samples) - 1, GRID_MOST).round().long()
            shown, shown_labels = samples[pick], None if labels is None else labels[pick]
        if run.prompts and len(shown) == len(samples):
            from .viz import save_prompt_grid

            save_prompt_grid(shown, run.prompts, out)
        else:
            save_grid(shown, out, nrow=_nrow(shown_labels, len(shown)))
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

    if not run.cfg.model.num_classes and not run.prompts:
        raise ConfigError("--guidance-sweep needs a class-conditional run (model.num_classes > 0) or a text run "
                          "with --prompt")
    rows = list(run.prompts) or list(run.class_names)
    labels = None if run.prompts else torch.arange(len(rows)).repeat_interleave(per_cell)
    blocks = []
    for w in weights:
        guided_run = dc.replace(run, cfg=dc.replace(run.cfg, sample=dc.replace(run.cfg.sample, guidance=w)))
        blocks.append(sample(guided_run, len(rows) * per_cell, labels=labels))
    if distributed.is_main():
        guidance_figure(weights, blocks, per_cell, rows, out)
    return out

"""Sample sets on disk: a grid PNG (or scatter) with an .npz beside it, written batch by batch so that an interrupted
sampling resumes where it stopped; the reverse-process figure and GIF; the guidance sweep figure.

`write_sample_set(run, request)` is the sample command's whole job; the functions under it are public too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .errors import ConfigError, RunError
from .io import atomic_write, run_lock
from .sampling import Run, check_guidance, generate, initial_noise, record_trajectory


@dataclass(frozen=True)
class SampleRequest:
    """What `ddpmlab sample` writes: n samples (or, with guidance_sweep, n per class and weight) to out."""

    n: int
    out: Path
    labels: torch.Tensor | None = None  # (n,) classes of a conditional run; None: sampling.default_labels
    guidance_sweep: tuple[float, ...] = ()  # guidance weights: one figure, a row per class, a block per weight
    trajectory: Path | None = None  # also the denoising trajectory figure here
    gif: Path | None = None  # also a GIF of the reverse process here


@dataclass(frozen=True)
class SampleResult:
    files: tuple[Path, ...]
    resumed: int = 0  # samples found already done in OUT.parts/ from an interrupted earlier call


def describe(run: Run, request: SampleRequest) -> str:
    """One line saying what write_sample_set is about to sample."""
    s = run.cfg.sample
    if request.guidance_sweep:
        return (f"sampling the guidance sweep {', '.join(f'{w:g}' for w in request.guidance_sweep)} from {run.path} "
                f"(step {run.step}), {request.n} per cell, with {s.sampler}, {s.steps} steps, seed {s.seed}")
    guided = s.guidance and (run.prompts or not run.cfg.model.context_dim)
    text = f", {len(run.prompts)} prompts" if run.prompts else ""
    text = text or (", unconditional (no --prompt)" if run.cfg.model.context_dim else "")
    return (f"sampling {request.n} from {run.path} (step {run.step}) with {s.sampler}, {s.steps} steps"
            f"{f', guidance {s.guidance:g}' if guided else ''}, seed {s.seed}{text}")


def write_sample_set(run: Run, request: SampleRequest, *, progress: bool = False) -> SampleResult:
    """The sample command's job: grid + .npz (or the guidance figure), then the trajectory and GIF if asked.

    More samples than one batch go batch by batch through OUT.parts/, so Ctrl-C or a crash keeps the finished
    batches and the same call again samples only the rest. A run directory is written under its lock.
    """
    out = request.out
    inside = out.resolve().is_relative_to(run.path.resolve()) and distributed.is_main()
    with run_lock(run.path) if inside else contextlib.nullcontext():  # one writer at a time in a run
        resumed = 0
        if request.guidance_sweep:
            files = [guidance_sweep(run, list(request.guidance_sweep), out, per_cell=request.n)]
        elif request.n > run.cfg.sample.batch_size:
            try:
                samples, resumed = sample_in_parts(run, request.n, out, request.labels, progress=progress)
            except KeyboardInterrupt:
                raise RunError(f"interrupted; the finished batches are kept in {parts_dir(out)}: rerun the same "
                               "command to sample only the rest") from None
            files = write_samples(run, samples, out, request.labels)
            distributed.barrier()  # every process has read the parts
            if distributed.is_main():
                shutil.rmtree(parts_dir(out))
        else:
            samples = generate(run, request.n, labels=request.labels, progress=progress)
            files = write_samples(run, samples, out, request.labels)
        if request.trajectory is not None or request.gif is not None:
            files += write_reverse_process(run, request.trajectory, request.gif, request.labels)
    return SampleResult(tuple(files), resumed)


def save_npz(path: Path, samples: torch.Tensor, labels: torch.Tensor | None, is_image: bool) -> None:
    """uint8 images (N, H, W, C) or float32 points (N, D), plus labels when conditional."""
    from .viz import to_uint8

    arrays: dict[str, np.ndarray] = {"images" if is_image else "points":
                                     to_uint8(samples) if is_image else samples.numpy().astype(np.float32)}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


GRID_MOST = 1024  # most images drawn in a grid PNG; the .npz holds them all


def parts_dir(out: Path) -> Path:
    """Where sample_in_parts keeps finished batches until the whole set is written: OUT.parts/ beside OUT."""
    return out.with_name(out.stem + ".parts")


def _fingerprint(run: Run, n: int, labels: torch.Tensor | None, chunk: int) -> dict[str, Any]:
    """Everything that decides the samples: a rerun continues only if this is unchanged."""
    settings = {k: list(v) if isinstance(v, tuple) else v  # as the JSON manifest stores them
                for k, v in dataclasses.asdict(run.cfg.sample).items() if k != "batch_size"}
    return {"run": str(run.path.resolve()), "step": run.step, "n": n, "chunk": chunk, **settings,
            **({"prompts": list(run.prompts), "text_encoder": run.text_encoder} if run.prompts else {}),
            "labels": None if labels is None else hashlib.sha256(labels.cpu().numpy().tobytes()).hexdigest()[:16]}


def sample_in_parts(run: Run, n: int, out: Path, labels: torch.Tensor | None = None, *,
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
        raise ConfigError(f"sample.n must be at least 1, got {n}")
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
    distributed.barrier()  # every process has looked at OUT.parts/ before rank 0 creates it
    if not manifest.is_file() and distributed.is_main():
        folder.mkdir()
        atomic_write(manifest, lambda f: f.write(json.dumps(_fingerprint(run, n, labels, chunk)).encode()))
    distributed.barrier()

    def part_path(start: int) -> Path:
        return folder / f"{start:09d}-{min(n, start + chunk):09d}.npz"

    starts = list(range(0, n, chunk))
    todo = [a for a in starts if not part_path(a).is_file()]
    done_before = sum(min(n, a + chunk) - a for a in starts if a not in todo)
    if done_before and distributed.is_main():
        print(f"resuming: {done_before} of {n} samples are already in {folder}")
    mine = todo[distributed.rank()::distributed.world_size()]
    for a in tqdm(mine, desc="sampling", unit="batch", disable=not progress or len(mine) < 2 or not distributed.is_main()):
        b = min(n, a + chunk)
        x = generate(run, n, labels=labels, part=slice(a, b))
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


def write_samples(run: Run, samples: torch.Tensor, out: Path, labels: torch.Tensor | None = None) -> list[Path]:
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


def write_reverse_process(run: Run, trajectory: Path | None, gif: Path | None,
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


def _reference_points(run: Run) -> torch.Tensor | None:
    from .data import TOYS, toy_points

    name = run.cfg.data.name
    return toy_points(name, 2000, seed=1)[0] if name in TOYS else None


SWEEP_MOST = 32  # images per class and weight in a guidance figure


def guidance_sweep(run: Run, weights: list[float], out: Path, per_cell: int = 6) -> Path:
    """One figure: a row per class (or prompt), a column block per guidance weight; the same seeds in every block."""
    if not 1 <= per_cell <= SWEEP_MOST:
        raise ConfigError(f"sample.n with a guidance sweep is the images per class and weight: 1 to {SWEEP_MOST}, "
                          f"got {per_cell}")
    from .viz import guidance_figure

    autoguided = run.autoguided
    if not run.cfg.model.num_classes and not run.prompts and not autoguided:
        raise ConfigError("--guidance-sweep needs a class-conditional run (model.num_classes > 0), a text run "
                          "with --prompt, or a run with a guide (train.guide_at)")
    rows = list(run.prompts) or (["autoguided"] if autoguided else list(run.class_names))
    labels = None if run.prompts or autoguided else torch.arange(len(rows)).repeat_interleave(per_cell)
    blocks = []
    for w in weights:
        guided_run = dataclasses.replace(run, cfg=dataclasses.replace(run.cfg, sample=dataclasses.replace(run.cfg.sample, guidance=w)))
        blocks.append(generate(guided_run, len(rows) * per_cell, labels=labels))
    if distributed.is_main():
        guidance_figure(weights, blocks, per_cell, rows, out)
    return out

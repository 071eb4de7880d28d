"""One training function that reads top to bottom: data, model, optimizer, EMA, the loop, checkpoints.

The diffusion math lives in diffusion.py; this file only drives it.
"""

from __future__ import annotations

import copy
import csv
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import Config
from .data import TensorData, load_dataset
from .diffusion import sample_t, training_loss
from .errors import ConfigError, RunError
from .guidance import drop_labels
from .models import build_model, count_parameters
from .runtime import autocast, pick_device, use_bf16
from .samplers.run import sample_from_config
from .schedules import Schedule, schedule_from_config


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    loss: float  # mean training loss over the last logging window
    images_per_s: float
    seconds: float
    stopped_early: bool  # minutes budget or a signal ended the run before train.steps


def check_labels(cfg: Config, data: TensorData) -> None:
    k = cfg.model.num_classes
    if k and data.y is None:
        raise ConfigError(f"model.num_classes={k} but dataset {data.name} has no labels; set model.num_classes=0")
    if k and k != data.num_classes:
        raise ConfigError(f"model.num_classes={k} but {data.name} has {data.num_classes} classes; set it to {data.num_classes}")


def lr_at(cfg: Config, step: int) -> float:
    """Linear warmup to train.lr, then constant or cosine decay to lr * min_lr_ratio."""
    tc = cfg.train
    if tc.warmup and step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    if tc.lr_schedule == "cosine":
        progress = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
        return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return tc.lr


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters; buffers (BatchNorm) are copied."""
    ema_p, model_p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, model_p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


class _StopFlag:
    """Turns SIGTERM into a graceful stop at the end of the current step."""

    def __init__(self) -> None:
        self.stop = False
        self._old: Any = None

    def __enter__(self) -> "_StopFlag":
        try:
            self._old = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train cfg's model on cfg's data into run_dir; resume=True continues the run saved there.

    A run directory that already holds a run is never overwritten unless overwrite=True.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file; choose another --out directory")
    if not resume and ckpt.is_run(run_dir) and not overwrite:
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                       "choose another --out, or pass --force to start over")
    tc = cfg.train
    device = pick_device(tc.device)
    bf16 = use_bf16(tc.precision, device)

    # Data as one in-memory tensor on the device; batches are index lookups.
    data = load_dataset(cfg.data, "train")
    check_labels(cfg, data)
    x_all = data.x.to(device)
    y_all = data.y.to(device) if data.y is not None and cfg.model.num_classes else None
    if tc.batch_size > len(x_all):
        raise ConfigError(f"train.batch_size={tc.batch_size} exceeds the {len(x_all)} items of {data.name}")

    torch.manual_seed(tc.seed)
    model = build_model(cfg, data.shape).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    schedule = schedule_from_config(cfg.diffusion)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)

    # All randomness flows from two explicit generators whose states are checkpointed.
    index_gen = torch.Generator().manual_seed(tc.seed)
    noise_gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
    perm, pos, step, ema_updates = torch.randperm(len(x_all), generator=index_gen), 0, 0, 0

    if resume:
        ckpt.load_weights(run_dir / ckpt.MODEL, model)
        ckpt.load_weights(run_dir / ckpt.EMA, ema)
        state = ckpt.load_state(run_dir)
        try:
            opt.load_state_dict(state["optimizer"])
            index_gen.set_state(state["index_gen"])
            noise_gen.set_state(state["noise_gen"])
            torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
            perm, pos, step, ema_updates = state["perm"], int(state["pos"]), int(state["step"]), int(state["ema_updates"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise RunError(f"{run_dir / ckpt.STATE} does not belong to this run ({exc}); start a new run") from None
        if len(perm) != len(x_all):
            raise RunError(f"{run_dir} was trained on {len(perm)} items but {data.name} has {len(x_all)}; "
                           "resume with the same data")
        log(f"resuming {run_dir} at step {step}")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ckpt.METRICS).write_text("step,loss,lr,images_per_s,elapsed_s\n")
    ckpt.write_config(run_dir, cfg)
    ckpt.write_meta(run_dir, data.shape, data.class_names, data.name)
    (run_dir / "samples").mkdir(exist_ok=True)

    def state_dict() -> dict[str, Any]:
        return {"optimizer": opt.state_dict(), "index_gen": index_gen.get_state(),
                "noise_gen": noise_gen.get_state(), "torch_rng": torch.get_rng_state(), "perm": perm, "pos": pos,
                "ema_updates": ema_updates}

    def save() -> None:
        ckpt.save_checkpoint(run_dir, model, ema, state_dict(), step)

    log(f"training {cfg.name}: {count_parameters(model) / 1e6:.2f}M parameters, {len(x_all)} items of "
        f"{data.name}, {device}{' bf16' if bf16 else ''}, {tc.steps} steps of batch {tc.batch_size} -> {run_dir}")
    writer = _tensorboard(run_dir)
    start_step, t_start = step, time.monotonic()
    window_loss, window_n, window_t = torch.zeros((), device=device), 0, time.monotonic()
    last_loss, rate, stopped = float("nan"), 0.0, False
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    model.train()
    try:
        with _StopFlag() as flag:
            while step < tc.steps:
                # Next batch from this epoch's permutation; a fresh permutation each epoch.
                if pos + tc.batch_size > len(perm):
                    perm, pos = torch.randperm(len(x_all), generator=index_gen), 0
                idx = perm[pos : pos + tc.batch_size].to(device)
                pos += tc.batch_size
                x0 = x_all[idx]
                y = y_all[idx] if y_all is not None else None
                if cfg.data.hflip and data.is_image:
                    flip = torch.rand(len(idx), generator=noise_gen, device=device) < 0.5
                    x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
                if y is not None:  # label dropout also trains the unconditional model used by guidance
                    y = drop_labels(y, tc.p_uncond, cfg.model.num_classes, noise_gen)
                t = sample_t(len(idx), schedule.T, noise_gen, device)
                eps = torch.randn(x0.shape, generator=noise_gen, device=device)

                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, step)
                with autocast(bf16, device):
                    loss = training_loss(model, schedule, x0, t, eps, y, prediction=cfg.diffusion.prediction,
                                         weighting=cfg.diffusion.weighting, min_snr_gamma=cfg.diffusion.min_snr_gamma)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
                decay = min(tc.ema_decay, (1 + ema_updates) / (10 + ema_updates)) if tc.ema_warmup else tc.ema_decay
                ema_update(ema, model, decay)
                ema_updates += 1
                step += 1
                window_loss += loss.detach()  # no host sync until the next log line
                window_n += 1
                bar.update(1)

                out_of_time = tc.minutes > 0 and time.monotonic() - t_start > tc.minutes * 60
                if step % tc.log_every == 0 or step == tc.steps or out_of_time or flag.stop:
                    now = time.monotonic()
                    last_loss = (window_loss / window_n).item()
                    rate = window_n * tc.batch_size / max(now - window_t, 1e-9)
                    _log_metrics(run_dir, writer, step, last_loss, lr_at(cfg, step - 1), rate, now - t_start)
                    bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
                    window_loss.zero_()
                    window_n, window_t = 0, now
                    if not math.isfinite(last_loss):
                        raise RunError(f"loss became {last_loss} at step {step}; lower train.lr or use "
                                       "--set train.precision=fp32 (the last checkpoint is kept)")
                if tc.sample_every and step % tc.sample_every == 0:
                    _save_grid(cfg, ema, schedule, data, device, run_dir / "samples" / f"step_{step:07d}.png")
                    model.train()
                if step % tc.ckpt_every == 0:
                    save()
                if out_of_time or flag.stop:
                    stopped = True
                    log(f"\nstopping at step {step} ({'time budget' if out_of_time else 'SIGTERM'}); saved. "
                        f"Continue with: ddpmlab train --resume {run_dir}")
                    break
    except KeyboardInterrupt:
        stopped = True
        log(f"\ninterrupted at step {step}; saving. Continue with: ddpmlab train --resume {run_dir}")
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    save()
    _plot_loss(run_dir)
    seconds = time.monotonic() - t_start
    images_per_s = (step - start_step) * tc.batch_size / max(seconds, 1e-9)
    log(f"done: step {step}, loss {last_loss:.4f}, {images_per_s:.0f} images/s, {seconds:.0f}s -> {run_dir}")
    return TrainResult(run_dir, step, last_loss, images_per_s, seconds, stopped)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(log_dir=str(run_dir))


def _log_metrics(run_dir: Path, writer, step: int, loss: float, lr: float, rate: float, elapsed: float) -> None:
    with open(run_dir / ckpt.METRICS, "a", newline="") as f:
        csv.writer(f).writerow([step, f"{loss:.6f}", f"{lr:.6g}", f"{rate:.1f}", f"{elapsed:.1f}"])
    if writer is not None:
        writer.add_scalar("loss", loss, step)
        writer.add_scalar("lr", lr, step)
        writer.add_scalar("images_per_s", rate, step)


def _save_grid(cfg: Config, ema, schedule: Schedule, data: TensorData, device, path: Path) -> None:
    from .viz import save_grid, save_scatter

    ema.eval()
    n = 64 if data.is_image else 2000
    samples = sample_from_config(cfg, ema, schedule, data.shape, n, device)
    if data.is_image:
        save_grid(samples, path, nrow=8)
    else:
        save_scatter(samples, path, reference=data.x[:2000])


def _plot_loss(run_dir: Path) -> None:
    from .viz import plot_loss

    plot_loss(run_dir / ckpt.METRICS, run_dir / "loss.png")

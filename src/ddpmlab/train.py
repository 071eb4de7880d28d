"""One training function that reads top to bottom: data, model, optimizer, EMA, the loop, checkpoints.

The diffusion math lives in diffusion.py and the multi-process plumbing in distributed.py; this file only drives them.

Several processes (torchrun): train.batch_size is the global batch. Every process draws the whole global batch
(indices, flips, label dropout, t, eps) from generators in identical states, exactly as one process would, and
trains on its own rows of it; DDP averages the gradients, which gives the single-process gradient of that batch.
Weights, optimizer and EMA stay identical in every process, so rank 0 alone writes, and a checkpoint does not
depend on how many processes made it.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import math
import signal
import time
import warnings
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed
from .config import Config
from .data import TensorData, load_dataset
from .diffusion import sample_t, training_loss
from .errors import ConfigError, RunError
from .guidance import drop_labels
from .prompting import CaptionBatches, encoder_meta
from .io import run_lock, user_files
from .models import build_model, count_parameters
from .runtime import autocast, keep_freed_memory, use_bf16
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


def make_optimizer(model: torch.nn.Module, tc, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where torch has one: one pass over all parameters, 2.6x faster than the
    per-tensor loop on CPU (benchmarks/RESULTS.md)."""
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                             fused=True if device.type in ("cpu", "cuda") else None)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters; buffers (BatchNorm) are copied."""
    ema_p, model_p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, model_p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


class _StopFlag:
    """Turns SIGTERM and SIGINT into a graceful stop at the end of the current step (a second Ctrl-C interrupts).

    A flag rather than an exception, so that all processes of a torchrun job can agree on the step to stop at.
    """

    def __init__(self) -> None:
        self.stop: str = ""  # the name of the signal that asked for the stop
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.stop == "SIGINT":
            raise KeyboardInterrupt
        self.stop = signal.Signals(signum).name

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


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
    Under torchrun every process calls this (it joins the process group for the run); rank 0 writes and logs.
    """
    with distributed.session():
        return _train(cfg, Path(run_dir), resume, overwrite, progress, log)


def _train(cfg: Config, run_dir: Path, resume: bool, overwrite: bool, progress: bool,
           log: Callable[[str], None]) -> TrainResult:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file; choose another --out directory")
    if not resume and ckpt.is_run(run_dir) and not overwrite:
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                       "choose another --out, or pass --force to start over")
    foreign = [] if resume or ckpt.is_run(run_dir) else user_files(run_dir)
    if foreign and not overwrite:
        raise RunError(f"{run_dir} is not empty and holds no run ({len(foreign)} entries, e.g. {foreign[0]}); "
                       "choose a new or empty --out, or pass --force to write the run among them")
    with contextlib.ExitStack() as held:  # the run's lock, taken before the first write and held to the end
        return _train_run(cfg, run_dir, resume, progress, log, held)


def _train_run(cfg: Config, run_dir: Path, resume: bool, progress: bool, log: Callable[[str], None],
               held: contextlib.ExitStack) -> TrainResult:
    tc = cfg.train
    main, world = distributed.is_main(), distributed.world_size()
    if not main:  # rank 0 speaks for the job
        progress, log = False, lambda _: None
    device = distributed.device_for(tc.device)  # cuda:LOCAL_RANK under torchrun
    bf16 = use_bf16(tc.precision, device)
    if device.type == "cpu":
        keep_freed_memory()
    micro = distributed.local_batch(tc.batch_size, tc.grad_accum)  # rows per forward pass in this process

    # Data as one in-memory tensor on the device; batches are index lookups. Rank 0 loads first, so that a
    # torchvision download happens once, not concurrently into the same folder.
    with distributed.rank0_first():
        data = load_dataset(cfg.data, "train")
    check_labels(cfg, data)
    captions = CaptionBatches(cfg, data, device) if cfg.model.context_dim else None  # text runs: prompts per batch
    x_all = data.x.to(device)
    y_all = data.y.to(device) if data.y is not None and cfg.model.num_classes else None
    if tc.batch_size > len(x_all):
        warnings.warn(f"train.batch_size={tc.batch_size} exceeds the {len(x_all)} items of {data.name}; training "
                      f"with batches of {len(x_all)}, so every step is one epoch", stacklevel=2)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(tc, batch_size=len(x_all)))
        tc = cfg.train
        micro = distributed.local_batch(tc.batch_size, tc.grad_accum)

    torch.manual_seed(tc.seed)
    model = build_model(cfg, data.shape).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    net = distributed.wrap(model)  # what the loss calls: DDP(model) under torchrun, which averages gradients
    schedule = schedule_from_config(cfg.diffusion)
    opt = make_optimizer(model, tc, device)

    # All randomness flows from two explicit generators whose states are checkpointed.
    index_gen = torch.Generator().manual_seed(tc.seed)
    noise_gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
    perm, pos, step, ema_updates = torch.randperm(len(x_all), generator=index_gen), 0, 0, 0

    if resume:
        source = ckpt.latest_checkpoint(run_dir)
        ckpt.load_weights(source / ckpt.MODEL, model)
        ckpt.load_weights(source / ckpt.EMA, ema)
        state = ckpt.load_state(source)
        try:
            opt.load_state_dict(state["optimizer"])
            index_gen.set_state(state["index_gen"])
            noise_gen.set_state(state["noise_gen"])
            torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
            if captions is not None:
                captions.generator.set_state(state["caption_gen"])
            perm, pos, step, ema_updates = state["perm"], int(state["pos"]), int(state["step"]), int(state["ema_updates"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise RunError(f"{run_dir / ckpt.STATE} does not belong to this run ({exc}); start a new run") from None
        if len(perm) != len(x_all):
            raise RunError(f"{run_dir} was trained on {len(perm)} items but {data.name} has {len(x_all)}; "
                           "resume with the same data")
        if step >= tc.steps:
            log(f"{run_dir} is already at its last step ({step} of train.steps={tc.steps}); nothing to train. "
                f"Extend it with: ddpmlab train --resume {run_dir} --set train.steps={2 * step}")
            return TrainResult(run_dir, step, math.nan, 0.0, 0.0, False)
        log(f"resuming {run_dir} at step {step}")
    if not main:  # dropout draws from the global generator: give each process its own (rank 0 keeps the saved one)
        torch.manual_seed(tc.seed + 7919 * distributed.rank() + 104729 * step)
    distributed.barrier()  # every process has checked and read run_dir before rank 0 writes into it
    if main:
        held.enter_context(run_lock(run_dir))  # one writer at a time; a refused start has written nothing
        if not resume:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / ckpt.METRICS).write_text("step,loss,lr,images_per_s,elapsed_s,skipped\n")
        ckpt.write_config(run_dir, cfg)
        ckpt.write_meta(run_dir, data.shape, data.class_names, data.name,
                        encoder_meta(captions.encoder) if captions else None)
        (run_dir / "samples").mkdir(exist_ok=True)

    def state_dict() -> dict[str, Any]:
        return {"optimizer": opt.state_dict(), "index_gen": index_gen.get_state(),
                "noise_gen": noise_gen.get_state(), "torch_rng": torch.get_rng_state(), "perm": perm, "pos": pos,
                "ema_updates": ema_updates, **({"caption_gen": captions.generator.get_state()} if captions else {})}

    def save() -> None:
        if not main:
            return
        try:
            ckpt.save_checkpoint(run_dir, model, ema, state_dict(), step, keep=tc.keep)
        except OSError as exc:
            kept = ckpt.snapshots(run_dir)
            raise RunError(f"could not write the checkpoint of step {step} ({exc.strerror or exc}); "
                           f"{'the previous one, ' + kept[-1].name + ', is intact' if kept else 'nothing was saved'}"
                           ) from None

    log(f"training {cfg.name}: {count_parameters(model) / 1e6:.2f}M parameters, {len(x_all)} items of "
        f"{data.name}, {device}{' bf16' if bf16 else ''}{f' x {world} processes' if world > 1 else ''}, "
        f"{tc.steps} steps of batch {tc.batch_size}"
        f"{f' in {tc.grad_accum} micro-batches' if tc.grad_accum > 1 else ''} -> {run_dir}")
    writer = _tensorboard(run_dir) if main else None
    # This process's rows of every global batch, cut into grad_accum micro-batches of `micro` rows.
    first = distributed.shard(tc.batch_size).start
    micro_rows = [slice(first + k * micro, first + (k + 1) * micro) for k in range(tc.grad_accum)]
    start_step, t_start = step, time.monotonic()
    window_loss, window_n, window_t = torch.zeros((), device=device), 0, time.monotonic()
    last_loss, rate, stopped = float("nan"), 0.0, False
    skipped = bad_in_row = 0  # non-finite steps: in all, and in a row
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    net.train()
    try:
        with _StopFlag() as flag:
            while step < tc.steps:
                # Next global batch from this epoch's permutation; a fresh permutation each epoch. Every
                # process draws all of it (same generators, same states) and then trains on its own rows.
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
                ctx = captions(idx, noise_gen) if captions is not None else None  # encoded once per global batch
                t = sample_t(len(idx), schedule.T, noise_gen, device)
                eps = torch.randn(x0.shape, generator=noise_gen, device=device)

                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, step)
                opt.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=device)  # this process's mean loss over its rows
                for k, rows in enumerate(micro_rows):
                    # Gradients of (micro-batch mean / grad_accum) add up to those of the batch mean; DDP
                    # all-reduces them once, on the last micro-batch.
                    with distributed.no_sync(net, sync=k == tc.grad_accum - 1):
                        with autocast(bf16, device):
                            call = net if ctx is None else partial(net, context=ctx.select(rows))
                            part = training_loss(call, schedule, x0[rows], t[rows], eps[rows],
                                                 None if y is None else y[rows], prediction=cfg.diffusion.prediction,
                                                 weighting=cfg.diffusion.weighting,
                                                 min_snr_gamma=cfg.diffusion.min_snr_gamma) / tc.grad_accum
                        part.backward()
                    loss += part.detach()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or float("inf"))
                step += 1
                bar.update(1)
                # One small all-reduce: all processes skip, stop or run out of time at the same step.
                nonfinite, stop, out_of_time = distributed.any_rank(
                    not (torch.isfinite(loss) and torch.isfinite(grad_norm)), bool(flag.stop),
                    tc.minutes > 0 and time.monotonic() - t_start > tc.minutes * 60)
                if nonfinite:
                    # Skip the update: weights, optimizer moments and EMA stay as they were.
                    skipped += 1
                    bad_in_row += 1
                    log(f"\nstep {step}: non-finite {'loss' if not torch.isfinite(loss) else 'gradient'}; "
                        f"update skipped ({bad_in_row} in a row, {skipped} in all)")
                    if bad_in_row >= tc.max_nonfinite:
                        raise RunError(
                            f"{bad_in_row} non-finite steps in a row at step {step}; stopped without saving, the last "
                            f"good checkpoint is kept. Likely causes: train.lr too high ({tc.lr:g}), bf16 overflow "
                            "(try --set train.precision=fp32), or bad input data")
                    continue
                bad_in_row = 0
                opt.step()
                decay = min(tc.ema_decay, (1 + ema_updates) / (10 + ema_updates)) if tc.ema_warmup else tc.ema_decay
                ema_update(ema, model, decay)
                ema_updates += 1
                window_loss += loss
                window_n += 1

                if (step % tc.log_every == 0 or step == tc.steps or out_of_time or stop) and window_n:
                    now = time.monotonic()
                    last_loss = (distributed.mean(window_loss) / window_n).item()  # the global batch's mean
                    rate = window_n * tc.batch_size / max(now - window_t, 1e-9)
                    if main:
                        _log_metrics(run_dir, writer, step, last_loss, lr_at(cfg, step - 1), rate, now - t_start,
                                     skipped)
                    bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
                    window_loss.zero_()
                    window_n, window_t = 0, now
                if tc.sample_every and step % tc.sample_every == 0:  # every process samples a share of the grid
                    _save_grid(cfg, ema, schedule, data, device, run_dir / "samples" / f"step_{step:07d}.png",
                               captions)
                if step % tc.ckpt_every == 0:
                    save()
                if out_of_time or stop:
                    stopped = True
                    log(f"\nstopping at step {step} ({'time budget' if out_of_time else flag.stop or 'a signal'}); "
                        f"saved. Continue with: ddpmlab train --resume {run_dir}")
                    break
    except KeyboardInterrupt:
        stopped = True
        log(f"\ninterrupted at step {step}; saving. Continue with: ddpmlab train --resume {run_dir}")
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    save()
    if main:
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


def _log_metrics(run_dir: Path, writer, step: int, loss: float, lr: float, rate: float, elapsed: float,
                 skipped: int) -> None:
    with open(run_dir / ckpt.METRICS, "a", newline="") as f:
        csv.writer(f).writerow([step, f"{loss:.6f}", f"{lr:.6g}", f"{rate:.1f}", f"{elapsed:.1f}", skipped])
    if writer is not None:
        writer.add_scalar("loss", loss, step)
        writer.add_scalar("lr", lr, step)
        writer.add_scalar("images_per_s", rate, step)


def _save_grid(cfg: Config, ema, schedule: Schedule, data: TensorData, device, path: Path,
               captions: CaptionBatches | None = None) -> None:
    from .viz import save_grid, save_scatter, save_prompt_grid

    ema.eval()
    n = 64 if data.is_image else 2000
    context = captions.preview_context(n) if captions is not None else None  # fixed prompts, a row each
    samples = sample_from_config(cfg, ema, schedule, data.shape, n, device, context=context,
                                 guidance=cfg.sample.guidance if context is not None else 0.0)
    if not distributed.is_main():
        return
    if captions is not None:
        save_prompt_grid(samples, captions.preview, path)
    elif data.is_image:
        save_grid(samples, path, nrow=8)
    else:
        save_scatter(samples, path, reference=data.x[:2000])


def _plot_loss(run_dir: Path) -> None:
    from .viz import plot_loss

    plot_loss(run_dir / ckpt.METRICS, run_dir / "loss.png")

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
import dataclasses
import math
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
from .clusters import cluster_counts, cluster_names, fit_clusters
from .config import Config
from .data import TensorData, load_dataset
from .diffusion import T_SAMPLING, AdaptiveT, LogVar, training_loss
from .errors import ConfigError, RunError
from .guidance import drop_labels
from .prompting import CaptionBatches, encoder_meta
from .io import run_lock, user_files
from .models import build_model, count_parameters
from .optim import Budget, ema_decay_at, ema_update, lr_at, make_optimizer
from .runtime import StopFlag, autocast, keep_freed_memory, use_bf16
from .train_log import MetricsLog, plot_loss, save_preview
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
    if cfg.sample.spacing == "tuned":  # the previews would need timesteps that only a trained run can be tuned for
        raise ConfigError("sample.spacing = 'tuned' reads the timesteps `ddpmlab tune` fits to a trained run; train "
                          "with another spacing (auto) and sample the run with --spacing tuned after tuning it")
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


@dataclass
class TrainState:
    """What decides the rest of a run besides the weights and the optimizer: the step, the data order and the
    position in it, the generators every random draw comes from, the EMA update count (its warmup), and with
    diffusion.t_sampling = "adaptive" the running losses that t is drawn by."""

    step: int
    perm: torch.Tensor  # this epoch's order of the items
    pos: int  # where the next batch starts in perm
    index_gen: torch.Generator  # draws the epochs' permutations
    noise_gen: torch.Generator  # flips, label dropout, t and eps
    ema_updates: int = 0
    caption_gen: torch.Generator | None = None  # text runs: which caption of an item is used
    adaptive_t: AdaptiveT | None = None  # diffusion.t_sampling = "adaptive"

    @classmethod
    def fresh(cls, n_items: int, seed: int, device: torch.device, caption_gen: torch.Generator | None,
              adaptive_t: AdaptiveT | None = None) -> "TrainState":
        index_gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        return cls(0, torch.randperm(n_items, generator=index_gen), 0, index_gen, noise_gen, 0, caption_gen,
                   adaptive_t)

    def to_dict(self, opt: torch.optim.Optimizer) -> dict[str, Any]:
        """The checkpoint's state.pt (with the optimizer's state and the global RNG, which dropout draws from)."""
        return {"optimizer": opt.state_dict(), "index_gen": self.index_gen.get_state(),
                "noise_gen": self.noise_gen.get_state(), "torch_rng": torch.get_rng_state(), "perm": self.perm,
                "pos": self.pos, "ema_updates": self.ema_updates,
                **({"caption_gen": self.caption_gen.get_state()} if self.caption_gen is not None else {}),
                **({"adaptive_t": self.adaptive_t.state_dict()} if self.adaptive_t is not None else {})}

    def load_dict(self, state: dict[str, Any], opt: torch.optim.Optimizer) -> None:
        """Continue from a state.pt: the inverse of to_dict (KeyError / ValueError / RuntimeError if it is not one)."""
        opt.load_state_dict(state["optimizer"])
        self.index_gen.set_state(state["index_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        torch.set_rng_state(state["torch_rng"])
        if self.caption_gen is not None:
            self.caption_gen.set_state(state["caption_gen"])
        self.perm, self.pos, self.step = state["perm"], int(state["pos"]), int(state["step"])
        self.ema_updates = int(state["ema_updates"])
        if self.adaptive_t is not None:
            self.adaptive_t.load_state_dict(state["adaptive_t"])


@dataclass(frozen=True)
class Batch:
    """One global batch: x0 (B, ...), labels y (B,) after dropout or None, prompts ctx or None, t (B,), eps, and the
    per-sample loss weights of importance-sampled t (B,) or None."""

    x0: torch.Tensor
    y: torch.Tensor | None
    ctx: Any
    t: torch.Tensor
    eps: torch.Tensor
    t_weight: torch.Tensor | None = None


def next_batch(state: TrainState, x_all: torch.Tensor, y_all: torch.Tensor | None, cfg: Config, schedule: Schedule,
               captions: CaptionBatches | None) -> Batch:
    """The next global batch from this epoch's permutation (a fresh one each epoch), with its flips, label
    dropout, t (diffusion.t_sampling) and noise. Every process draws all of it (same generators, same states)."""
    tc, gen = cfg.train, state.noise_gen
    if state.pos + tc.batch_size > len(state.perm):
        state.perm, state.pos = torch.randperm(len(x_all), generator=state.index_gen), 0
    idx = state.perm[state.pos : state.pos + tc.batch_size].to(x_all.device)
    state.pos += tc.batch_size
    x0 = x_all[idx]
    y = y_all[idx] if y_all is not None else None
    if cfg.data.hflip and x0.dim() == 4:
        flip = torch.rand(len(idx), generator=gen, device=x0.device) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    if y is not None:  # label dropout also trains the unconditional model used by guidance
        y = drop_labels(y, tc.p_uncond, cfg.model.num_classes, gen)
    ctx = captions(idx, gen) if captions is not None else None  # encoded once per global batch
    d, t_weight = cfg.diffusion, None
    if state.adaptive_t is not None:
        t, t_weight = state.adaptive_t.draw(len(idx), gen, x0.device)
    else:
        t = T_SAMPLING[d.t_sampling](schedule, len(idx), d, gen, x0.device)
    return Batch(x0, y, ctx, t, torch.randn(x0.shape, generator=gen, device=x0.device), t_weight)


def train_step(net: Callable[..., torch.Tensor], model: torch.nn.Module, opt: torch.optim.Optimizer,
               batch: Batch, cfg: Config, schedule: Schedule, micro_rows: list[slice], bf16: bool, lr: float,
               logvar: LogVar | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of this process's rows of the batch, accumulated over micro-batches and clipped:
    (its mean loss, the gradient norm, every row's own loss). The optimizer step is the caller's, once the step is
    known finite. Importance-sampled t (batch.t_weight) weighs each row's loss; logvar is EDM2's learned weight."""
    device, d = batch.x0.device, cfg.diffusion
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss = torch.zeros((), device=device)
    accum, rows_loss = len(micro_rows), []
    for k, rows in enumerate(micro_rows):
        # Gradients of (micro-batch mean / grad_accum) add up to those of the batch mean; DDP all-reduces them
        # once, on the last micro-batch.
        with distributed.no_sync(net, sync=k == accum - 1):
            with autocast(bf16, device):
                call = net if batch.ctx is None else partial(net, context=batch.ctx.select(rows))
                per_row = training_loss(call, schedule, batch.x0[rows], batch.t[rows], batch.eps[rows],
                                        None if batch.y is None else batch.y[rows], prediction=d.prediction,
                                        weighting=d.weighting, min_snr_gamma=d.min_snr_gamma,
                                        sigma_data=d.sigma_data, logvar=logvar, reduce=False)
                weighted = per_row if batch.t_weight is None else batch.t_weight[rows] * per_row
                part = weighted.mean() / accum
            part.backward()
        loss += part.detach()
        rows_loss.append(per_row.detach())
    if logvar is not None:  # outside DDP: average its gradient over the processes by hand
        for p in logvar.parameters():
            if p.grad is not None:
                p.grad.copy_(distributed.mean(p.grad))
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
    return loss, grad_norm, torch.cat(rows_loss)


def _train_run(cfg: Config, run_dir: Path, resume: bool, progress: bool, log: Callable[[str], None],
               held: contextlib.ExitStack) -> TrainResult:
    tc = cfg.train
    main = distributed.is_main()
    if not main:  # rank 0 speaks for the job
        progress, log = False, lambda _: None
    device = distributed.device_for(tc.device)  # cuda:LOCAL_RANK under torchrun
    bf16 = use_bf16(tc.precision, device)
    if device.type == "cpu":
        keep_freed_memory()
    cfg, data, captions = _load_data(cfg, device, run_dir if resume else None, log)
    tc = cfg.train
    micro = distributed.local_batch(tc.batch_size, tc.grad_accum)  # rows per forward pass; checked before writing
    x_all = data.x.to(device)
    y_all = data.y.to(device) if data.y is not None and cfg.model.num_classes else None

    torch.manual_seed(tc.seed)
    model = build_model(cfg, data.shape).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    net = distributed.wrap(model)  # what the loss calls: DDP(model) under torchrun, which averages gradients
    schedule = schedule_from_config(cfg.diffusion)
    # EDM2's learned loss weight trains beside the network (its state goes in state.pt, not in the weights)
    logvar = LogVar(seed=tc.seed).to(device) if cfg.diffusion.weighting == "uncertainty" else None
    opt = make_optimizer(model, tc, device, extra=logvar)
    # All randomness flows from explicit generators whose states are checkpointed.
    adaptive_t = AdaptiveT(schedule.T) if cfg.diffusion.t_sampling == "adaptive" else None
    state = TrainState.fresh(len(x_all), tc.seed, device, captions.generator if captions else None, adaptive_t)
    if resume:
        if main:  # before reading the checkpoint: a run another process is writing is refused, not half-read
            held.enter_context(run_lock(run_dir))
        _resume(run_dir, model, ema, opt, state, len(x_all), data.name, logvar)
        if state.step >= tc.steps:
            log(f"{run_dir} is already at its last step ({state.step} of train.steps={tc.steps}); nothing to train. "
                f"Extend it with: ddpmlab train --resume {run_dir} --set train.steps={2 * state.step}")
            return TrainResult(run_dir, state.step, math.nan, 0.0, 0.0, False)
        log(f"resuming {run_dir} at step {state.step}")
    if not main:  # dropout draws from the global generator: give each process its own (rank 0 keeps the saved one)
        torch.manual_seed(tc.seed + 7919 * distributed.rank() + 104729 * state.step)
    distributed.barrier()  # every process has checked and read run_dir before rank 0 writes into it
    if main:
        if not resume:  # one writer at a time; a refused start has written nothing (resume took it above)
            held.enter_context(run_lock(run_dir))
        _write_run_files(run_dir, cfg, data, captions, fresh=not resume)

    log(_summary(cfg, model, data, device, bf16, run_dir))
    # This process's rows of every global batch, cut into grad_accum micro-batches.
    first = distributed.shard(tc.batch_size).start
    job = _Job(cfg, run_dir, model, ema, net, opt, schedule, data, x_all, y_all, captions, bf16,
               [slice(first + k * micro, first + (k + 1) * micro) for k in range(tc.grad_accum)], main, log, logvar)
    start_step, t_start = state.step, time.monotonic()
    metrics = MetricsLog(run_dir, cfg, device, tqdm(total=tc.steps, initial=state.step, disable=not progress,
                                                    unit="step", dynamic_ncols=True), write=main)
    try:
        stopped = _loop(job, state, metrics, t_start)
    finally:
        metrics.close()
    job.save(state)
    if main:
        plot_loss(run_dir)
    seconds = time.monotonic() - t_start
    images_per_s = (state.step - start_step) * tc.batch_size / max(seconds, 1e-9)
    log(f"done: step {state.step}, loss {metrics.last_loss:.4f}, {images_per_s:.0f} images/s, {seconds:.0f}s "
        f"-> {run_dir}")
    return TrainResult(run_dir, state.step, metrics.last_loss, images_per_s, seconds, stopped)


@dataclass(frozen=True)
class _Job:
    """What stays fixed while a run trains: its config, networks, optimizer, schedule and data."""

    cfg: Config
    run_dir: Path
    model: torch.nn.Module
    ema: torch.nn.Module
    net: Callable[..., torch.Tensor]  # what the loss calls: DDP(model) under torchrun
    opt: torch.optim.Optimizer
    schedule: Schedule
    data: TensorData
    x_all: torch.Tensor
    y_all: torch.Tensor | None
    captions: CaptionBatches | None
    bf16: bool
    micro_rows: list[slice]  # this process's rows of each global batch, one slice per micro-batch
    main: bool
    log: Callable[[str], None]
    logvar: LogVar | None = None  # diffusion.weighting = "uncertainty"

    def save(self, state: TrainState) -> None:
        if self.main:
            saved = state.to_dict(self.opt)
            if self.logvar is not None:
                saved["logvar"] = {k: v.detach().cpu() for k, v in self.logvar.state_dict().items()}
            _save(self.run_dir, self.model, self.ema, saved, state.step, self.cfg.train.keep)


def _loop(job: _Job, state: TrainState, metrics: MetricsLog, t_start: float) -> bool:
    """Train until train.steps, the time budget or a signal; True when it stopped early."""
    cfg, tc, log = job.cfg, job.cfg.train, job.log
    bad_in_row = 0  # non-finite steps in a row
    budget, guide_kept = Budget(tc, state.step, t_start), (job.run_dir / ckpt.GUIDE).is_file()
    job.net.train()
    try:
        with StopFlag() as flag:
            while state.step < tc.steps:
                batch = next_batch(state, job.x_all, job.y_all, cfg, job.schedule, job.captions)
                lr = lr_at(cfg, state.step, budget.end)
                loss, grad_norm, rows_loss = train_step(job.net, job.model, job.opt, batch, cfg, job.schedule,
                                                        job.micro_rows, job.bf16, lr, job.logvar)
                state.step += 1
                metrics.bar.update(1)
                budget.update(state.step, time.monotonic())
                # One small all-reduce: all processes skip, stop or run out of time at the same step.
                nonfinite, stop, out_of_time = distributed.any_rank(
                    not (torch.isfinite(loss) and torch.isfinite(grad_norm)), bool(flag.stop),
                    budget.out_of_time(time.monotonic()))
                if nonfinite:  # skip the update: weights, optimizer moments and EMA stay as they were
                    metrics.skipped += 1
                    bad_in_row += 1
                    _check_nonfinite(tc, state.step, not torch.isfinite(loss), bad_in_row, metrics.skipped, log)
                    continue
                bad_in_row = 0
                if state.adaptive_t is not None:  # every process folds in the whole batch's losses
                    state.adaptive_t.observe(batch.t, distributed.gather_shards(rows_loss, tc.batch_size))
                job.opt.step()
                ema_update(job.ema, job.model, ema_decay_at(tc, state.ema_updates))
                state.ema_updates += 1
                if budget.guide_due(state.step, guide_kept):
                    if job.main:
                        ckpt.save_guide(job.run_dir, job.ema, state.step)
                    guide_kept = True
                metrics.add(loss, lr)
                if state.step % tc.log_every == 0 or state.step == tc.steps or out_of_time or stop:
                    metrics.flush(state.step, time.monotonic() - t_start)
                if tc.sample_every and state.step % tc.sample_every == 0:  # every process samples a share
                    save_preview(cfg, job.ema, job.schedule, job.data,
                                 job.run_dir / "samples" / f"step_{state.step:07d}.png", job.captions)
                if state.step % tc.ckpt_every == 0:
                    job.save(state)
                if out_of_time or stop:
                    log(f"\nstopping at step {state.step} ({'time budget' if out_of_time else flag.stop or 'a signal'}"
                        f"); saved. Continue with: ddpmlab train --resume {job.run_dir}")
                    return True
    except KeyboardInterrupt:
        log(f"\ninterrupted at step {state.step}; saving. Continue with: ddpmlab train --resume {job.run_dir}")
        return True
    return False


def _load_data(cfg: Config, device: torch.device, resumed: Path | None, log: Callable[[str], None]
               ) -> tuple[Config, TensorData, CaptionBatches | None]:
    """The training split (rank 0 loads first, so a download happens once), checked against the model; a dataset
    smaller than the batch trains with batches of all of it. data.clusters: the items' k-means clusters as labels
    (those saved in the resumed run's folder, so that it goes on with the same ones)."""
    with distributed.rank0_first():
        data = load_dataset(cfg.data, "train")
    if cfg.data.clusters:
        data = _with_clusters(cfg, data, resumed, log)
    check_labels(cfg, data)
    captions = CaptionBatches(cfg, data, device) if cfg.model.context_dim else None  # text runs: prompts per batch
    if cfg.train.batch_size > len(data.x):
        warnings.warn(f"train.batch_size={cfg.train.batch_size} exceeds the {len(data.x)} items of {data.name}; "
                      f"training with batches of {len(data.x)}, so every step is one epoch", stacklevel=3)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=len(data.x)))
    return cfg, data, captions


def _with_clusters(cfg: Config, data: TensorData, resumed: Path | None, log: Callable[[str], None]) -> TensorData:
    """data with its labels replaced by data.clusters k-means clusters (clusters.py); its own labels are dropped."""
    k = cfg.data.clusters
    labels = ckpt.load_clusters(resumed) if resumed is not None else None
    if labels is not None and len(labels) != len(data.x):
        raise RunError(f"{resumed} was clustered on {len(labels)} items but {data.name} has {len(data.x)}; "
                       "resume with the same data")
    if labels is None:
        t0 = time.monotonic()
        try:
            labels = fit_clusters(data.x, k, seed=cfg.train.seed)
        except ValueError as exc:
            raise ConfigError(f"{exc}: {data.name} has {len(data.x)} items; lower it") from None
        sizes = cluster_counts(labels, k)
        log(f"clustered {len(data.x)} items of {data.name} into {k} clusters (k-means on principal components, "
            f"{time.monotonic() - t0:.1f} s); sizes {min(sizes)}-{max(sizes)}")
    return dataclasses.replace(data, y=labels, class_names=cluster_names(k))


def _resume(run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
            state: TrainState, n_items: int, data_name: str, logvar: LogVar | None = None) -> None:
    """Load the latest checkpoint's weights, optimizer and TrainState; refuse a state of another run or data."""
    source = ckpt.latest_checkpoint(run_dir)
    ckpt.load_weights(source / ckpt.MODEL, model)
    ckpt.load_weights(source / ckpt.EMA, ema)
    try:
        saved = ckpt.load_state(source)
        if logvar is not None:
            logvar.load_state_dict(saved["logvar"])
        state.load_dict(saved, opt)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise RunError(f"{run_dir / ckpt.STATE} does not belong to this run ({exc}); start a new run") from None
    if len(state.perm) != n_items:
        raise RunError(f"{run_dir} was trained on {len(state.perm)} items but {data_name} has {n_items}; "
                       "resume with the same data")


def _write_run_files(run_dir: Path, cfg: Config, data: TensorData, captions: CaptionBatches | None,
                     fresh: bool) -> None:
    if fresh:
        if ckpt.is_run(run_dir):  # started over with --force: the old run's weights must not outlive it
            ckpt.clear_weights(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ckpt.METRICS).write_text("step,loss,lr,images_per_s,elapsed_s,skipped\n")
    ckpt.write_config(run_dir, cfg)
    extra = encoder_meta(captions.encoder) if captions else {}
    if cfg.data.clusters and data.y is not None:  # sampling draws clusters by these sizes (clusters.draw_clusters)
        ckpt.save_clusters(run_dir, data.y)
        extra = {**extra, "cluster_counts": list(cluster_counts(data.y, cfg.data.clusters))}
    ckpt.write_meta(run_dir, data.shape, data.class_names, data.name, extra or None)
    (run_dir / "samples").mkdir(exist_ok=True)


def _save(run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, state: dict[str, Any], step: int,
          keep: int) -> None:
    try:
        ckpt.save_checkpoint(run_dir, model, ema, state, step, keep=keep)
    except OSError as exc:
        kept = ckpt.snapshots(run_dir)
        raise RunError(f"could not write the checkpoint of step {step} ({exc.strerror or exc}); "
                       f"{'the previous one, ' + kept[-1].name + ', is intact' if kept else 'nothing was saved'}"
                       ) from None


def _check_nonfinite(tc, step: int, in_loss: bool, in_row: int, skipped: int, log: Callable[[str], None]) -> None:
    log(f"\nstep {step}: non-finite {'loss' if in_loss else 'gradient'}; update skipped ({in_row} in a row, "
        f"{skipped} in all)")
    if in_row >= tc.max_nonfinite:
        raise RunError(f"{in_row} non-finite steps in a row at step {step}; stopped without saving, the last good "
                       f"checkpoint is kept. Likely causes: train.lr too high ({tc.lr:g}), bf16 overflow (try --set "
                       "train.precision=fp32), or bad input data")


def _summary(cfg: Config, model: torch.nn.Module, data: TensorData, device: torch.device, bf16: bool,
             run_dir: Path) -> str:
    tc, world = cfg.train, distributed.world_size()
    return (f"training {cfg.name}: {count_parameters(model) / 1e6:.2f}M parameters, {len(data.x)} items of "
            f"{data.name}, {device}{' bf16' if bf16 else ''}{f' x {world} processes' if world > 1 else ''}, "
            f"{tc.steps} steps of batch {tc.batch_size}"
            f"{f' in {tc.grad_accum} micro-batches' if tc.grad_accum > 1 else ''} -> {run_dir}")

"""The sampling job: a `Run` (a trained network ready to sample) and `generate(run, n)`, the one path every
command, the training previews, evaluation, editing and the studio sample through.

Sample i draws all of its noise from its own generator (seed, i), so it is the same whatever the batch size, the
part of the indices asked for, or the number of torchrun processes sharing the work.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed
from .config import Config, validate
from .diffusion import Denoiser, make_denoiser
from .errors import ConfigError, RunError
from .guidance import autoguided, guided, in_interval, prompted
from .io import atomic_write, run_lock
from .models import build_model
from .prompting import run_context, with_prompts
from .runtime import autocast, keep_freed_memory, use_bf16
from .samplers import SAMPLER_OPTIONS, SAMPLERS, resolve_spacing, steps_warning
from .samplers.common import Callback
from .samplers.tuning import REFERENCE_SAMPLER, TunedTimesteps, reference_steps_for, tune_solver
from .schedules import Schedule, schedule_from_config, spaced_timesteps
from .text.context import TextContext


@dataclass
class Run:
    """A trained network ready to sample: config, network (eval mode), schedule, data shape and device."""

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
    guide: torch.nn.Module | None = None  # an early EMA for autoguidance of an unconditional run (train.guide_at)
    cluster_counts: tuple[int, ...] = ()  # a data.clusters run's cluster sizes: samples draw clusters by them

    @property
    def is_image(self) -> bool:
        return len(self.item_shape) == 3

    @property
    def has_classes(self) -> bool:
        """Labelled by the dataset's classes (a class classifier can check its samples); a data.clusters run's
        labels are clusters, not classes."""
        return bool(self.cfg.model.num_classes) and not self.cluster_counts

    @property
    def autoguided(self) -> bool:
        """An unconditional run with a guide: --guidance W then means autoguidance (guidance.autoguided)."""
        return self.guide is not None and not self.cfg.model.num_classes and not self.cfg.model.context_dim

    @classmethod
    def load(cls, run_dir: str | Path, *, weights: Literal["ema", "model"] = "ema", device: str = "auto") -> "Run":
        """Read config.toml and meta.json, build the network and load its (EMA) weights from the latest checkpoint.

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
        guide = None
        if (run_dir / ckpt.GUIDE).is_file():
            guide = build_model(cfg, item_shape)
            ckpt.load_weights(run_dir / ckpt.GUIDE, guide)
            guide.to(dev).eval()
        counts = tuple(int(c) for c in meta.get("cluster_counts", ()))
        return cls(run_dir, cfg, model, schedule_from_config(cfg.diffusion), item_shape, tuple(meta["class_names"]),
                   step, dev, guide=guide, cluster_counts=counts)

    @classmethod
    def from_training(cls, cfg: Config, model: torch.nn.Module, schedule: Schedule, item_shape: tuple[int, ...],
                      *, path: Path = Path("."), step: int = 0, class_names: tuple[str, ...] = (),
                      cluster_counts: tuple[int, ...] = ()) -> "Run":
        """The live state of a training run (its EMA network, say), sampled on the network's device."""
        return cls(Path(path), cfg, model, schedule, tuple(item_shape), tuple(class_names), step,
                   next(model.parameters()).device, cluster_counts=tuple(cluster_counts))


def load_run(run_dir: str | Path, *, weights: Literal["ema", "model"] = "ema", device: str = "auto") -> Run:
    """Run.load: a run directory's network, ready to sample."""
    return Run.load(run_dir, weights=weights, device=device)


def with_sample_settings(run: Run, **settings: Any) -> Run:
    """A copy of run whose cfg.sample has the given (non-None) settings, checked by config.validate.

    Choosing another sampler resets the options that only the old one took (the run's eta, say, when switching
    from ddim to euler); an option given here that the chosen sampler does not take is an error. guidance = 0
    drops the run's sample.guidance_interval the same way.
    """
    updates = {k: v for k, v in settings.items() if v is not None}
    if not updates:
        return run
    if updates.get("guidance", None) == 0 and "guidance_interval" not in updates:
        updates["guidance_interval"] = ()  # no guidance, no interval to guide in
    new = updates.get("sampler", run.cfg.sample.sampler)
    if new in SAMPLERS and new != run.cfg.sample.sampler:
        keep = SAMPLERS[new].options
        updates = {**{k: v for k, v in SAMPLER_OPTIONS.items() if k not in keep}, **updates}
    try:
        cfg = validate(dataclasses.replace(run.cfg, sample=dataclasses.replace(run.cfg.sample, **updates)))
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    return dataclasses.replace(run, cfg=cfg)


def requested_spacing(sampler: str | None, spacing: str | None) -> str | None:
    """The spacing to sample with when a caller may name a sampler and a spacing: the spacing given, else "auto"
    when a sampler is named (the run's spacing was chosen for its own sampler), else None (keep the run's)."""
    return spacing or ("auto" if sampler else None)


def default_labels(num_classes: int, n: int) -> torch.Tensor | None:
    """The labels of n samples when none are given: every class in turn, in blocks of (nearly) equal size.

    Sample i gets class i * K // n, so a grid of n = K rows x m has one row per class, and every class is present
    whenever n >= K; None for an unconditional run (num_classes = 0).
    """
    if not num_classes:
        return None
    return torch.arange(n) * num_classes // n if n >= num_classes else torch.arange(n)


def run_labels(run: Run, n: int) -> torch.Tensor | None:
    """The labels n samples of a run get when none are asked for: a data.clusters run draws each sample's cluster
    by the clusters' sizes (clusters.draw_clusters, from sample.seed), a class-conditional run takes every class in
    turn (default_labels), an unconditional one none."""
    if run.cluster_counts:
        from .clusters import draw_clusters

        return draw_clusters(run.cluster_counts, n, run.cfg.sample.seed)
    return default_labels(run.cfg.model.num_classes, n)


def class_labels(run: Run, which: str | None, n: int) -> torch.Tensor | None:
    """Labels for n samples: None -> run_labels, 'all' -> every class in turn (default_labels), an index or a
    class name -> that class for all n."""
    k = run.cfg.model.num_classes
    if which is None:
        return run_labels(run, n)
    if run.cfg.model.context_dim:
        raise ConfigError(f"--class needs a class-conditional run; {run.path} is text-conditional: use --prompt")
    if not k:
        raise ConfigError(f"--class needs a class-conditional run; {run.path} was trained without labels "
                          "(model.num_classes = 0)")
    if which == "all":
        return default_labels(k, n)
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


def check_guidance(run: Run, w: float) -> None:
    """A guidance weight needs labels or prompts to guide towards, and must be a non-negative number.

    A text run sampled without prompts draws unconditional samples (the null prompt): no guidance applies.
    """
    if w and not run.cfg.model.num_classes and not run.cfg.model.context_dim and not run.autoguided:
        raise ConfigError(f"--guidance needs a class-conditional run or a guide; {run.path} was trained without "
                          f"labels (model.num_classes = 0) and has no {ckpt.GUIDE} (it ended before train.guide_at "
                          "of its steps, or was trained without it): sample it with --guidance 0")
    if w < 0 or w != w:
        raise ConfigError(f"--guidance must be a non-negative number, got {w}")


def sample_generators(seed: int, indices: range, device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample index: sample i always gets the same noise for a given seed."""
    return [torch.Generator(device=device).manual_seed(seed * 1_000_003 + i) for i in indices]


def initial_noise(seed: int, indices: range, item_shape: tuple[int, ...], device: torch.device | str):
    """x_T for samples [indices] and the generators that continue their noise streams."""
    gens = sample_generators(seed, indices, device)
    return torch.stack([torch.randn(item_shape, generator=g, device=device) for g in gens]), gens


def denoiser_for(run: Run, labels: torch.Tensor | None, context: TextContext | None
                 ) -> Callable[[slice], Denoiser]:
    """denoise_for(slice) -> the denoiser of samples [slice]: their labels or prompts, guidance, x0 clipping."""
    cfg, model = run.cfg, run.model
    guidance = cfg.sample.guidance
    labelled = guidance and context is None and cfg.model.num_classes  # a text run without prompts: unguided
    net = guided(model, guidance, cfg.model.num_classes) if labelled else model
    if guidance and run.autoguided:
        net = autoguided(model, run.guide, guidance)
    interval = cfg.sample.guidance_interval

    def limit(guided_net: Callable[..., torch.Tensor], plain: Callable[..., torch.Tensor]) -> Callable[..., Any]:
        """The guided network only inside sample.guidance_interval (when one is set), the plain one elsewhere."""
        if not interval:
            return guided_net
        return in_interval(guided_net, plain, run.schedule.sigma / run.schedule.alpha, *interval)

    net = limit(net, model) if net is not model else net
    clip = 1.0 if cfg.sample.clip and run.is_image else None
    bf16 = _sample_in_bf16(cfg, run.item_shape, run.device)
    if bf16 and context is None:
        net = _autocast(net, run.device)

    def for_slice(sl: slice) -> Denoiser:
        part = net
        if context is not None:  # sample i keeps prompt i, whichever batch it falls in
            rows = context.select(sl)
            part = limit(prompted(model, rows, guidance), prompted(model, rows)) if guidance else prompted(model, rows)
            part = _autocast(part, run.device) if bf16 else part
        return make_denoiser(part, run.schedule, cfg.diffusion.prediction, y=None if labels is None else labels[sl],
                             clip=clip, sigma_data=cfg.diffusion.sigma_data)

    return for_slice


def _sample_in_bf16(cfg: Config, item_shape: tuple[int, ...], device: torch.device) -> bool:
    """sample.precision: 'auto' is bf16 for image networks that predict v or x0, where the hardware runs bf16.

    An eps-prediction network is sampled in fp32 under 'auto': x0 = (x_t - sigma_t eps) / alpha_t multiplies the
    network's rounding error by sigma_t / alpha_t (about 160 at t = T of the linear schedule), and bf16's 8-bit
    mantissa then turns into pixel-sized noise. v and x0 targets have no such factor.
    """
    if len(item_shape) != 3 or cfg.sample.precision == "fp32":
        return False
    if cfg.sample.precision == "bf16":
        return True
    return cfg.diffusion.prediction != "eps" and use_bf16("auto", device)


def _autocast(net: Callable[..., torch.Tensor], device: torch.device) -> Callable[..., torch.Tensor]:
    """net run under bf16 autocast; its output back in float32 for the sampler's arithmetic."""

    def call(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with autocast(True, device):
            return net(x, t, y).float()

    return call


def timesteps_of(run: Run) -> torch.Tensor:
    """The decreasing timesteps run.cfg.sample asks for (its spacing, "auto" resolved for its sampler and steps;
    "tuned" read from the run's timesteps.json)."""
    s = run.cfg.sample
    if s.spacing == "tuned":
        return tuned_timesteps(run)
    return spaced_timesteps(run.schedule, s.steps, resolve_spacing(s.sampler, s.spacing, s.steps, run.schedule.T))


TUNED = ckpt.TUNED  # RUN/timesteps.json: {"SAMPLER/STEPS": what save_tuned records}
TUNE_NOISE = 500_000  # tuning draws the noise of sample indices from here on, not that of the samples drawn first
# Tuning fits few-step solves. On the oracle mixtures it helped at 5-20 steps; at 50 the solve was about as close to
# the exact ODE as any reference on the same integer timesteps, and the fit followed the reference's own error (3x
# further from the exact ODE than auto's, benchmarks/spacing_tune.py).
MAX_TUNED_STEPS = 20


# samplers that solve the probability-flow ODE (no noise drawn) at their options' defaults (ddim's eta = 0, heun's
# churn = 0): every one but ddpm
ODE_SAMPLERS: dict[str, dict[str, Any]] = {name: spec.options for name, spec in SAMPLERS.items() if name != "ddpm"}


def _tuned_entries(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / TUNED
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is unreadable ({exc}); delete it and run `ddpmlab tune` again") from None
    if not isinstance(entries, dict):
        raise RunError(f"{path} is not a table of tuned timesteps; delete it and run `ddpmlab tune` again")
    return entries


def tuned_timesteps(run: Run) -> torch.Tensor:
    """The timesteps `ddpmlab tune` fitted for run.cfg.sample's sampler and step count (RUN/timesteps.json).

    Warns when they were fitted to another checkpoint or guidance weight than the run now samples with.
    """
    s = run.cfg.sample
    entry = _tuned_entries(run.path).get(f"{s.sampler}/{s.steps}")
    if entry is None:
        raise ConfigError(f"{run.path} has no timesteps tuned for {s.sampler} at {s.steps} steps; run `ddpmlab tune "
                          f"{run.path} --sampler {s.sampler} --steps {s.steps}` first, or choose another --spacing")
    changed = [f"{what} {then} (now {now})" for what, then, now in (
        ("checkpoint step", entry.get("checkpoint_step"), run.step), ("guidance", entry.get("guidance"), s.guidance))
        if then != now]
    if changed:
        warnings.warn(f"the tuned timesteps of {s.sampler} at {s.steps} steps were fitted at {', '.join(changed)}; "
                      f"run `ddpmlab tune {run.path} --sampler {s.sampler} --steps {s.steps}` again to refit them",
                      stacklevel=3)
    ts = torch.tensor([int(t) for t in entry["timesteps"]])
    if not 2 <= len(ts) <= s.steps or not bool((ts[:-1] > ts[1:]).all()) or ts[-1] < 1 or ts[0] > run.schedule.T:
        raise RunError(f"{run.path / TUNED} holds no valid timesteps for {s.sampler} at {s.steps} steps; run "
                       f"`ddpmlab tune {run.path} --sampler {s.sampler} --steps {s.steps}` again")
    return ts


def check_tunable(run: Run) -> None:
    """run.cfg.sample asks for an ODE solve of at least 2 steps, the kind `tune` fits; a one-line error if not."""
    s = run.cfg.sample
    if s.sampler not in ODE_SAMPLERS:
        raise ConfigError(f"tuning fits the steps of an ODE solve, and {s.sampler} draws noise at every step: "
                          f"choose one of {', '.join(ODE_SAMPLERS)}")
    noisy = [f"sample.{k} = {getattr(s, k)}" for k, v in ODE_SAMPLERS[s.sampler].items() if getattr(s, k) != v]
    if noisy:
        raise ConfigError(f"tuning fits the steps of an ODE solve, and {s.sampler} with {', '.join(noisy)} draws "
                          "noise: set it to 0")
    if not 2 <= s.steps <= MAX_TUNED_STEPS:
        raise ConfigError(f"tuning fits solves of 2 to {MAX_TUNED_STEPS} steps, got sample.steps = {s.steps}: at more "
                          "steps the solve is as accurate as the reference it would be fitted to; sample with "
                          "--spacing auto there")


def start_spacing(run: Run) -> str:
    """The spacing tuning starts from: run.cfg.sample's, with "auto" resolved and "tuned" taken as "auto"."""
    s = run.cfg.sample
    return resolve_spacing(s.sampler, "auto" if s.spacing == "tuned" else s.spacing, s.steps, run.schedule.T)


@torch.no_grad()
def tune(run: Run, *, samples: int = 64, reference_steps: int = 100, max_trials: int = 150,
         progress: bool = False) -> TunedTimesteps:
    """Fit the timesteps of run.cfg.sample's sampler and step count to the run's network (samplers/tuning.py).

    The noise is held out (sample indices from TUNE_NOISE on, run.cfg.sample.seed's): `samples` draws to fit and
    as many more to check the fit on; labels, prompts and guidance are those the run samples with. The start is
    the run's spacing (auto's choice for "tuned"); the fit is samplers.tuning.tune_solver's (the reference:
    REFERENCE_SAMPLER with reference_steps_for(...) steps uniform in log-SNR). Costs 2 x those steps + up to
    (max_trials + 3) x steps network evaluations of `samples` items, in one batch each.
    """
    check_tunable(run)
    s = run.cfg.sample
    if samples < 1 or reference_steps < 1 or max_trials < 1:
        raise ConfigError(f"samples, reference steps and trials must be at least 1, got {samples}, "
                          f"{reference_steps}, {max_trials}")
    check_guidance(run, s.guidance)
    T = run.schedule.T
    start = spaced_timesteps(run.schedule, s.steps, start_spacing(run))
    if len(start) < 2:
        raise ConfigError(f"{s.steps} steps of spacing {s.spacing} merge into one timestep at T = {T}")
    labels = run_labels(run, samples)
    context = run_context(run, samples)
    denoise = denoiser_for(run, None if labels is None else labels.to(run.device),
                           None if context is None else context.to(run.device))(slice(0, samples))
    if run.device.type == "cpu":
        keep_freed_memory()
    spec = SAMPLERS[s.sampler]
    fit, check = (initial_noise(s.seed, range(first, first + samples), run.item_shape, run.device)[0]
                  for first in (TUNE_NOISE, TUNE_NOISE + samples))
    return tune_solver(partial(spec.fn, **spec.option_values(s)), denoise, run.schedule, start, fit, check,
                       reference_steps=reference_steps, max_trials=max_trials, progress=progress)


def save_tuned(run: Run, result: TunedTimesteps, *, samples: int, reference_steps: int) -> Path:
    """Record result in RUN/timesteps.json under "SAMPLER/STEPS" (other entries kept), holding the run's lock."""
    s = run.cfg.sample
    path = run.path / TUNED
    with run_lock(run.path):
        entries = _tuned_entries(run.path)
        entries[f"{s.sampler}/{s.steps}"] = {
            "timesteps": list(result.timesteps), "start": list(result.start),
            "start_spacing": start_spacing(run),
            "error_start": result.error_start, "error": result.error, "check_start": result.check_start,
            "check": result.check, "trials": result.trials, "samples": samples,
            "reference": f"{REFERENCE_SAMPLER}, "
                         f"{reference_steps_for(len(result.start), reference_steps, run.schedule.T)} steps, logsnr",
            "checkpoint_step": run.step, "guidance": s.guidance, "prompts": list(run.prompts), "seed": s.seed}
        atomic_write(path, lambda f: f.write((json.dumps(entries, indent=2) + "\n").encode()))
    return path


@torch.no_grad()
def generate(run: Run, n: int, *, labels: torch.Tensor | None = None, prompts: list[str] | None = None,
             part: slice | None = None, callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """Samples [part] of the indices 0..n-1 (default all): (len, *item_shape) on the CPU, in data space.

    labels: (n,) classes of a conditional run (default: run_labels). prompts: a text run's prompts, in
    len(prompts) blocks of samples (default run.prompts; none: unconditional). Sampler, steps, spacing, seed,
    guidance and batch size are run.cfg.sample's. callback(i, t, x_t, x0_hat) sees the first batch's steps.
    Under torchrun, without part or callback, the processes share the indices and each returns all n samples.
    """
    if n < 1:
        raise ConfigError(f"sample.n must be at least 1, got {n}")
    run = with_prompts(run, prompts)
    s = run.cfg.sample
    check_guidance(run, s.guidance)
    warning = steps_warning(s.sampler, s.steps)
    if warning:
        warnings.warn(warning, stacklevel=3)  # the caller of generate, past torch.no_grad's wrapper
    labels = run_labels(run, n) if labels is None else labels
    labels = None if labels is None else labels.to(run.device)
    context = run_context(run, n)
    denoise_for = denoiser_for(run, labels, None if context is None else context.to(run.device))
    spec, timesteps = SAMPLERS[s.sampler], timesteps_of(run)
    split = callback is None and part is None and distributed.world_size() > 1
    mine = distributed.shard(n) if split else part
    first, last = (0, n) if mine is None else (mine.start, mine.stop)
    if run.device.type == "cpu":
        keep_freed_memory()
    out = [torch.empty((0, *run.item_shape))]
    starts = range(first, last, s.batch_size)
    for start in tqdm(starts, desc="sampling", unit="batch",
                      disable=not progress or len(starts) < 2 or not distributed.is_main()):
        idx = range(start, min(last, start + s.batch_size))
        x_T, gens = initial_noise(s.seed, idx, run.item_shape, run.device)
        x0 = spec.fn(denoise_for(slice(idx.start, idx.stop)), x_T, run.schedule, timesteps, generator=gens,
                     callback=callback if start == first else None, **spec.option_values(s))
        out.append(x0.float().cpu())
    x = torch.cat(out)
    return distributed.gather_shards(x, n) if split else x


def sample(run: Run, n: int, *, labels: torch.Tensor | None = None, prompts: list[str] | None = None,
           progress: bool = False) -> torch.Tensor:
    """All n samples (n, *item_shape) in data space ([-1, 1] for images): generate(run, n)."""
    return generate(run, n, labels=labels, prompts=prompts, progress=progress)


@torch.no_grad()
def record_trajectory(run: Run, n: int, labels: torch.Tensor | None = None
                      ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Sample n items in one batch, keeping every step: (ts, x_t: (K, n, ...), x0_hat: (K, n, ...)).

    Samples equal those of generate() with the same seed: the first n of them.
    """
    ts, xs, x0s = [], [], []

    def keep(i: int, t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        ts.append(t)
        xs.append(x.float().cpu())
        x0s.append(x0.float().cpu())

    one_batch = dataclasses.replace(run, cfg=dataclasses.replace(
        run.cfg, sample=dataclasses.replace(run.cfg.sample, batch_size=n)))
    generate(one_batch, n, labels=labels, callback=keep)
    return ts, torch.stack(xs), torch.stack(x0s)


LoadedRun = Run  # the name before Run; kept as an alias

__all__ = ["LoadedRun", "Run", "check_guidance", "check_tunable", "class_labels", "default_labels", "denoiser_for",
           "generate", "initial_noise", "load_run", "record_trajectory", "reference_steps_for", "requested_spacing",
           "run_labels", "sample", "sample_generators", "save_tuned", "start_spacing", "timesteps_of", "tune",
           "tuned_timesteps", "with_sample_settings"]

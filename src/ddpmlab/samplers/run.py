"""Drive a sampler over many samples in batches, with per-sample seeds, labels and guidance.

Under torchrun the sample indices are split across processes; since sample i draws all of its noise from its own
generator (seed, i), the gathered result equals a single process's, whatever the number of processes.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..diffusion import Denoiser, make_denoiser
from ..guidance import guided, prompted
from ..text.context import TextContext
from ..runtime import autocast, keep_freed_memory, use_bf16
from ..schedules import Schedule, Spacing, spaced_timesteps
from .common import Callback


def sample_generators(seed: int, indices: range, device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample index: sample i always gets the same noise for a given seed."""
    return [torch.Generator(device=device).manual_seed(seed * 1_000_003 + i) for i in indices]


def initial_noise(seed: int, indices: range, item_shape: tuple[int, ...], device: torch.device | str):
    """x_T for samples [indices] and the generators that continue their noise streams."""
    gens = sample_generators(seed, indices, device)
    return torch.stack([torch.randn(item_shape, generator=g, device=device) for g in gens]), gens


def generate(
    denoiser_for: Callable[[slice], Denoiser],
    sampler: Callable[..., torch.Tensor],
    schedule: Schedule,
    item_shape: tuple[int, ...],
    n: int,
    *,
    steps: int | None = None,
    spacing: Spacing = "trailing",
    timesteps: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
    progress: bool = False,
    options: dict[str, Any] | None = None,
    part: slice | None = None,
) -> torch.Tensor:
    """Samples [part] of the indices 0..n-1 (default: all), (len, *item_shape) on the CPU, in index order.

    denoiser_for(slice) builds the denoiser for samples [slice]. Timesteps are `timesteps` if given, else `steps`
    spaced by `spacing`. The callback only sees the first batch.
    """
    if timesteps is None:
        timesteps = spaced_timesteps(schedule, steps or schedule.T, spacing)
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    first, last = (0, n) if part is None else (part.start, part.stop)
    out = [torch.empty((0, *item_shape))]
    starts = range(first, last, batch_size)
    for start in tqdm(starts, desc="sampling", unit="batch",
                      disable=not progress or len(starts) < 2 or not distributed.is_main()):
        idx = range(start, min(last, start + batch_size))
        x_T, gens = initial_noise(seed, idx, item_shape, device)
        x0 = sampler(
            denoiser_for(slice(idx.start, idx.stop)), x_T, schedule, timesteps,
            generator=gens, callback=callback if start == first else None, **(options or {}),
        )
        out.append(x0.float().cpu())
    return torch.cat(out)


def sampler_options(sampler: Callable[..., Any], settings: Any) -> dict[str, Any]:
    """The sampler's keyword-only options that the SampleConfig `settings` has a field for (e.g. eta, variance)."""
    params = inspect.signature(sampler).parameters
    skip = {"generator", "callback"}
    return {
        name: getattr(settings, name)
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip and hasattr(settings, name)
    }


def denoiser_from_config(cfg, model: torch.nn.Module, schedule: Schedule, item_shape: tuple[int, ...],
                         labels: torch.Tensor | None, guidance: float,
                         context: TextContext | None = None) -> Callable[[slice], Denoiser]:
    """denoiser_for(slice) for a run: labels or prompts per sample, classifier-free guidance, x0 clipping."""
    labelled = guidance and context is None and cfg.model.num_classes  # a text run without prompts: unguided
    net = guided(model, guidance, cfg.model.num_classes) if labelled else model
    clip = 1.0 if cfg.sample.clip and len(item_shape) == 3 else None
    bf16 = _sample_in_bf16(cfg, item_shape, next(model.parameters()).device)
    if bf16 and context is None:
        net = _autocast(net, next(model.parameters()).device)

    def denoiser_for(sl: slice) -> Denoiser:
        part = net
        if context is not None:  # sample i keeps prompt i, whichever batch it falls in
            part = prompted(model, context.select(sl), guidance)
            part = _autocast(part, next(model.parameters()).device) if bf16 else part
        return make_denoiser(part, schedule, cfg.diffusion.prediction, y=None if labels is None else labels[sl],
                             clip=clip)

    return denoiser_for


def _sample_in_bf16(cfg, item_shape: tuple[int, ...], device: torch.device) -> bool:
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


def sample_from_config(
    cfg,
    model: torch.nn.Module,
    schedule: Schedule,
    item_shape: tuple[int, ...],
    n: int,
    device: torch.device | str,
    *,
    labels: torch.Tensor | None = None,
    guidance: float = 0.0,
    callback: Callback | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    part: slice | None = None,
    context: TextContext | None = None,
) -> torch.Tensor:
    """n samples from a network with a run config's sampler settings (cfg.sample, cfg.diffusion).

    part: only samples [part] of the n (this process alone, no split across processes).

    labels: (n,) class labels for a conditional model; None gives 0, 1, ..., K-1, 0, 1, ... in order.
    context: n encoded prompts (one row per sample) for a text-conditional model; None is the null prompt.
    Under torchrun every process must call this: each generates its shard of the indices and every process
    returns all n samples, in index order. With a callback (which sees the first batch whole) each process
    generates everything itself.
    """
    from . import get_sampler, resolve_spacing, steps_warning

    s = cfg.sample
    k = cfg.model.num_classes
    if labels is None and k:
        labels = torch.arange(n) % k
    if labels is not None:
        labels = labels.to(device)
    sampler = get_sampler(s.sampler)
    warning = steps_warning(s.sampler, s.steps)
    if warning:
        warnings.warn(warning, stacklevel=2)
    split = callback is None and part is None and distributed.world_size() > 1
    mine = distributed.shard(n) if split else part
    if context is not None:
        context = context.to(device)
    x = generate(denoiser_from_config(cfg, model, schedule, item_shape, labels, guidance, context), sampler, schedule,
                 item_shape, n, steps=s.steps, spacing=resolve_spacing(s.sampler, s.spacing, s.steps, schedule.T),
                 seed=s.seed, batch_size=batch_size or s.batch_size, device=device, callback=callback, progress=progress,
                 options=sampler_options(sampler, s), part=mine)
    return distributed.gather_shards(x, n) if split else x

"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a network, and label dropout.

Convention (the lecture notes' and Ho & Salimans' eq. 6):
    eps~(x_t, c) = (1 + w) eps(x_t, c) - w eps(x_t, null)
w = 0 is plain conditional sampling. The other common convention (e.g. diffusers' guidance_scale s)
writes eps~ = eps_u + s (eps_c - eps_u), which is the same thing with s = 1 + w.
The combination is applied to the raw network output: eps, x0 and v are all affine in the output for
a fixed x_t with coefficients that do not depend on the label, and the weights sum to one, so guiding
the output equals guiding eps for every prediction type.
"""

from __future__ import annotations

from typing import Callable

import torch

from .text.context import TextContext

Network = Callable[..., torch.Tensor]


def guided(model: Network, w: float, null_label: int) -> Network:
    """model(x, t, y) -> (1 + w) model(x, t, y) - w model(x, t, null), in one batched forward pass."""
    if w == 0:
        return model

    def forward(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier-free guidance needs class labels y")
        null = torch.full_like(y, null_label)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.float().chunk(2)
        return (1.0 + w) * cond - w * uncond

    return forward


def autoguided(model: Network, guide: Network, w: float) -> Network:
    """model(x, t) -> (1 + w) model(x, t) - w guide(x, t): autoguidance (Karras et al. 2024, "Guiding a diffusion
    model with a bad version of itself", eq. 2 with their weight 1 + w), the guide being an early EMA of the same
    run. It sharpens an unconditional model the way classifier-free guidance sharpens a conditional one."""
    if w == 0:
        return model

    def forward(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (1.0 + w) * model(x, t, y).float() - w * guide(x, t, y).float()

    return forward


def in_interval(guided_net: Network, plain: Network, noise_level: torch.Tensor, lo: float, hi: float) -> Network:
    """guided_net where the noise level sigma_t / alpha_t lies in (lo, hi], plain (the unguided network, one
    evaluation) elsewhere: guidance in a limited interval (Kynkaenniemi et al. 2024). Guiding at the highest noise
    levels pulls samples towards a few modes; at the lowest it barely changes them; the middle is where it helps.

    noise_level: (T + 1,) table of sigma_t / alpha_t, indexed by the integer timestep t.
    """

    def forward(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        level = noise_level.to(t.device)[t.long()]
        inside = ((level > lo) & (level <= hi)).reshape(-1, *([1] * (x.dim() - 1)))
        if bool(inside.all()):
            return guided_net(x, t, y)
        if not bool(inside.any()):
            return plain(x, t, y).float()
        return torch.where(inside, guided_net(x, t, y), plain(x, t, y).float())

    return forward


def prompted(model: Network, context: TextContext, w: float = 0.0) -> Network:
    """model(x, t) with each sample's prompt bound; w > 0 guides it: (1 + w) eps(x, c) - w eps(x, null), batched.

    context holds one row per sample (or a divisor of the batch, repeated, as make_denoiser repeats labels).
    """

    def rows(n: int) -> TextContext:
        if len(context) == n:
            return context
        return context.select(torch.arange(n, device=context.tokens.device) % len(context))

    def forward(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        c = rows(x.shape[0])
        if not w:
            return model(x, t, None, context=c)
        both = TextContext.cat([c, c.dropped(torch.ones(len(c), dtype=torch.bool, device=c.tokens.device))])
        cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), None, context=both).float().chunk(2)
        return (1.0 + w) * cond - w * uncond

    return forward


def drop_labels(y: torch.Tensor, p_uncond: float, null_label: int, generator: torch.Generator | None) -> torch.Tensor:
    """Replace each label by the null label with probability p_uncond (Ho & Salimans 2022, Alg. 1 line 3)."""
    if p_uncond <= 0:
        return y
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, null_label), y)

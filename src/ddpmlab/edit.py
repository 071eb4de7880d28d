"""Pixel-space editing with a trained run: SDEdit, RePaint inpainting, latent interpolation, DDIM inversion.

Notation as in diffusion.py: alpha_bar_t, alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t).
All functions take images (N, C, H, W) in [-1, 1] shaped like the run's data, and return the same.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .diffusion import q_posterior, q_sample
from .errors import ConfigError
from .prompting import run_context
from .samplers import SAMPLERS, randn_like
from .samplers.common import batched_t
from .samplers.ddim import ddim_invert, sample_ddim
from .sampling import Run, denoiser_for, initial_noise, run_labels, sample_generators
from .schedules import spaced_timesteps


def _denoiser(run: Run, n: int, labels: torch.Tensor | None):
    """The denoiser of n edits: their labels (default: sampling.run_labels) or the run's prompts."""
    labels = run_labels(run, n) if labels is None else labels
    labels = None if labels is None else labels.to(run.device)
    context = run_context(run, n)
    return denoiser_for(run, labels, None if context is None else context.to(run.device))(slice(0, n))


@torch.no_grad()
def sdedit(run: Run, image: torch.Tensor, strength: float, n: int = 4, labels: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Meng et al. 2022 (SDEdit), Alg. 1: noise the image to t0 = strength * T, then denoise back to t = 0.

    image: (1, C, H, W). Returns (x_t0: (n, ...), edits: (n, ...)) for n seeds.
    """
    if not 0 < strength <= 1:
        raise ConfigError(f"--strength must lie in (0, 1], got {strength}")
    sched, s = run.schedule, run.cfg.sample
    t0 = max(1, round(strength * sched.T))
    count = max(1, min(t0, round(s.steps * strength)))
    ts = torch.unique(torch.linspace(1, t0, count).round().long()).flip(0)
    gens = sample_generators(s.seed, range(n), run.device)
    x0 = image.to(run.device).expand(n, *image.shape[1:])
    x_t0 = q_sample(sched, x0, batched_t(t0, x0), randn_like(x0, gens))
    spec = SAMPLERS[s.sampler]
    out = spec.fn(_denoiser(run, n, labels), x_t0, sched, ts, generator=gens, **spec.option_values(s))
    return x_t0.cpu(), out.cpu()


def repaint_path(steps: int, jump: int, resample: int) -> list[int]:
    """Indices into the decreasing timestep list (plus a final 0) visited by RePaint (Lugmayr et al. 2022, Sec. 4.2).

    Follows the paper's schedule (`get_schedule_jump` in its code), where the time index r = steps - 1 - k
    counts down to 0 at the last reverse step: at r = 0, jump, 2 jump, ... (below steps - jump) the chain
    is noised `jump` steps back up, `resample - 1` times each. The jumps are counted from the clean end, so
    the least noisy block, where the seam between known and filled pixels settles, is always harmonised.
    """
    left = {r: resample - 1 for r in range(0, steps - jump, jump)} if resample > 1 else {}
    path, r = [0], steps - 1
    while r >= 0:
        r -= 1
        path.append(steps - 1 - r)
        if left.get(r, 0) > 0:
            left[r] -= 1
            for _ in range(jump):
                r += 1
                path.append(steps - 1 - r)
    return path


@torch.no_grad()
def inpaint(run: Run, image: torch.Tensor, mask: torch.Tensor, n: int = 4, jump: int = 10,
            resample: int = 1, labels: torch.Tensor | None = None) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1): fill mask == 1 pixels, keep the rest; (n, C, H, W).

    Known pixels are drawn from q(x_s | x0) at every step; unknown ones from the DDPM posterior with the
    network's x0 estimate. resample > 1 adds the paper's jumps back up in time (harmonises the seams).
    """
    sched, s = run.schedule, run.cfg.sample
    ts = [int(t) for t in spaced_timesteps(sched, s.steps, "trailing")] + [0]
    x0 = image.to(run.device).expand(n, *image.shape[1:])
    fill = mask.to(run.device).expand_as(x0)
    denoise = _denoiser(run, n, labels)
    x, gens = initial_noise(s.seed, range(n), run.item_shape, run.device)  # gens continue past x_T's draws
    path = repaint_path(len(ts) - 1, max(1, jump), max(1, resample))
    for a, b in zip(path[:-1], path[1:]):
        t, u = ts[a], ts[b]
        tt, uu = batched_t(t, x), batched_t(u, x)
        if b > a:  # down: one reverse step t -> u
            x0_hat, _ = denoise(x, tt)
            mean, var = q_posterior(sched, x0_hat, x, tt, uu)
            unknown = mean + var.sqrt() * randn_like(x, gens) if u > 0 else mean
            known = q_sample(sched, x0, uu, randn_like(x, gens)) if u > 0 else x0
            x = fill * unknown + (1 - fill) * known
        else:  # up: q(x_u | x_t) for u > t, i.e. noise the whole image back to time u
            ratio = sched.at(sched.alpha_bar, uu, x) / sched.at(sched.alpha_bar, tt, x)
            x = ratio.sqrt() * x + (1 - ratio).sqrt() * randn_like(x, gens)
    return x.cpu()


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (keeps the norm Gaussian noise has)."""
    fa, fb = a.flatten(), b.flatten()
    omega = torch.arccos((fa @ fb / (fa.norm() * fb.norm())).clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - w) * a + w * b
    return (torch.sin((1 - w) * omega) * a + torch.sin(w * omega) * b) / torch.sin(omega)


@torch.no_grad()
def interpolate(run: Run, seed_a: int, seed_b: int, frames: int, label: int | None = None) -> torch.Tensor:
    """Decode slerp(x_T(seed_a), x_T(seed_b)) with deterministic DDIM; (frames, C, H, W).

    x_T(seed) is the first sample's noise of `ddpmlab sample --seed seed`.
    """
    if frames < 2:
        raise ConfigError(f"--frames must be at least 2, got {frames}")
    xa, _ = initial_noise(seed_a, range(1), run.item_shape, run.device)
    xb, _ = initial_noise(seed_b, range(1), run.item_shape, run.device)
    x_T = torch.cat([slerp(xa, xb, w) for w in torch.linspace(0, 1, frames).tolist()])
    labels = run_labels(run, 1) if label is None else torch.tensor([label])
    labels = None if labels is None else labels.expand(frames)  # one class along the whole strip
    ts = spaced_timesteps(run.schedule, run.cfg.sample.steps, "trailing")
    return sample_ddim(_denoiser(run, frames, labels), x_T, run.schedule, ts).cpu()


@torch.no_grad()
def invert(run: Run, images: torch.Tensor, labels: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM inversion (Song et al. 2021, Sec. 4.3) to latents x_T, and their DDIM reconstruction."""
    n = len(images)
    ts = spaced_timesteps(run.schedule, run.cfg.sample.steps, "trailing")
    denoise = _denoiser(run, n, labels)
    latents = ddim_invert(denoise, images.to(run.device), run.schedule, ts)
    return latents.cpu(), sample_ddim(denoise, latents, run.schedule, ts).cpu()


# ------------------------------------------------------------------ the edit commands' jobs: pictures in, files out


def picture_for(run: Run, path: str | Path) -> torch.Tensor:
    """A picture file as the run's data: (1, C, H, W) in [-1, 1], converted and resized with a warning."""
    from .pictures import load_picture

    if not run.is_image:
        raise ConfigError(f"{run.path} models 2D points; editing needs an image run")
    c, h, _ = run.item_shape
    return load_picture(path, size=h, channels=c)


def _same_label(label: int | None, n: int) -> torch.Tensor | None:
    return None if label is None else torch.full((n,), label, dtype=torch.long)


def write_sdedit(run: Run, image: str | Path, strength: float, n: int, label: int | None, out: Path) -> str:
    """SDEdit figure: the input, its noised version, then n edits in one row. Returns what was written."""
    from .viz import save_grid

    x0 = picture_for(run, image)
    noised, edits = sdedit(run, x0, strength, n, _same_label(label, n))
    save_grid(torch.cat([x0, noised[:1], edits]), out, nrow=n + 2)
    return f"wrote {out}  (input, noised to t0 = {round(strength * run.schedule.T)}, then {n} edits)"


def write_inpaint(run: Run, image: str | Path, mask: str | Path, n: int, jump: int, resample: int,
                  label: int | None, out: Path) -> str:
    """Inpainting figure: the input, the input with the hole blanked (grey), then n fills."""
    from .pictures import load_mask
    from .viz import save_grid

    x0 = picture_for(run, image)
    fill = load_mask(mask, image, run.item_shape[-1])
    filled = inpaint(run, x0, fill, n, jump, resample, _same_label(label, n))
    save_grid(torch.cat([x0, x0 * (1 - fill), filled]), out, nrow=n + 2)  # 0 is mid-grey in [-1, 1]
    return f"wrote {out}  (input, masked input, then {n} fills)"


def write_interpolation(run: Run, seed_a: int, seed_b: int, frames: int, label: int | None, out: Path) -> str:
    """A strip of `frames` decodings between two seeds' noise."""
    from .viz import save_grid

    if not run.is_image:
        raise ConfigError(f"{run.path} models 2D points; interpolation needs an image run")
    save_grid(interpolate(run, seed_a, seed_b, frames, label), out, nrow=frames)
    return f"wrote {out}"


def write_inversion(run: Run, images: list[str], label: int | None, out: Path) -> str:
    """Latents of the pictures to out (.npz: latents, reconstructions, images) and a PNG of inputs over
    reconstructions beside it."""
    import io

    import numpy as np

    from .io import atomic_write
    from .viz import save_grid

    x0 = torch.cat([picture_for(run, p) for p in images])
    latents, recon = invert(run, x0, _same_label(label, len(x0)))
    buf = io.BytesIO()
    np.savez_compressed(buf, latents=latents.numpy(), reconstructions=recon.numpy(), images=x0.numpy())
    atomic_write(out, lambda f: f.write(buf.getvalue()))
    png = out.with_suffix(".png")
    save_grid(torch.cat([x0, recon]), png, nrow=len(x0))
    err = (recon - x0).abs().mean().item()
    return f"wrote {out} and {png} (top: inputs, bottom: reconstructions; mean |error| {err:.4f})"

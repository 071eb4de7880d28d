"""The nll job: bits/dim of real images under a run, from the variational bound (metrics/nll.py), to nll.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .errors import ConfigError
from .eval_results import NllResult
from .io import atomic_write
from .reference import HELD_OUT_SPLIT, real_sets
from .sampling import Run


def evaluate_nll(run: Run, n: int = 500, *, timesteps: int | None = None, variance: str = "posterior",
                 seed: int = 0, batch_size: int = 250, progress: bool = False,
                 out_dir: str | Path | None = None) -> NllResult:
    """Bits/dim of n real images under run's model (metrics/nll.py), written to nll.json in out_dir (run.path).

    Images come from the test split, or for datasets without one the odd-indexed half (which the model
    saw in training: the number is then a training-set likelihood, and says so). Conditional models are
    evaluated unconditionally, through the null label.
    """
    from .diffusion import Denoised, make_denoiser
    from .metrics.nll import nll_bits_per_dim

    if not run.is_image:
        raise ConfigError(f"{run.path} models 2D points; bits/dim is defined for 8-bit images")
    if variance not in ("posterior", "beta"):
        raise ConfigError(f"--variance must be posterior or beta, got {variance!r}")
    x0 = real_sets(run.cfg.data, 0).reference[:n]
    k = run.cfg.model.num_classes
    null = torch.tensor([k], device=run.device) if k else None  # one label, repeated to every batch
    net = make_denoiser(run.model, run.schedule, run.cfg.diffusion.prediction, y=null,
                        clip=1.0 if run.cfg.sample.clip else None, sigma_data=run.cfg.diffusion.sigma_data)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Denoised:
        out = net(x_t.to(run.device), t.to(run.device))
        return Denoised(out.x0.cpu(), out.eps.cpu())

    t0 = time.perf_counter()
    res = nll_bits_per_dim(denoise, run.schedule, x0, variance=variance, timesteps=timesteps,  # type: ignore[arg-type]
                           generator=torch.Generator().manual_seed(seed), batch_size=batch_size, progress=progress)
    which = "held-out test images" if run.cfg.data.name in HELD_OUT_SPLIT else \
        f"training images ({run.cfg.data.name} has no test split)"
    path = Path(out_dir or run.path) / "nll.json"
    result = NllResult(str(run.path), run.step, run.cfg.data.name, which, variance, seed, res.summary(),
                       round(time.perf_counter() - t0, 1), str(path))
    blob = (json.dumps(result.to_json(), indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(blob))
    return result

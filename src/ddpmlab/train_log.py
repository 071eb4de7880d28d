"""A training run's log: the loss over each window in metrics.csv and TensorBoard, the progress bar, loss.png,
and the preview grids of samples/."""

from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from . import distributed
from .config import Config
from .data import TensorData
from .prompting import CaptionBatches
from .schedules import Schedule


class MetricsLog:
    """The loss over a logging window, written to metrics.csv and TensorBoard (rank 0) and shown on the bar."""

    def __init__(self, run_dir: Path, cfg: Config, device: torch.device, bar: Any, write: bool) -> None:
        self.run_dir, self.cfg, self.bar = run_dir, cfg, bar
        self.writer = _tensorboard(run_dir) if write else None
        self.write = write
        self.sum, self.n, self.t0 = torch.zeros((), device=device), 0, time.monotonic()
        self.last_loss, self.rate, self.skipped, self.lr = float("nan"), 0.0, 0, 0.0

    def add(self, loss: torch.Tensor, lr: float) -> None:
        self.sum += loss
        self.n += 1
        self.lr = lr

    def flush(self, step: int, elapsed: float) -> None:
        """Log the window's mean loss (over every process's rows) and images/s, then start a new window."""
        if not self.n:
            return
        now = time.monotonic()
        self.last_loss = (distributed.mean(self.sum) / self.n).item()
        self.rate = self.n * self.cfg.train.batch_size / max(now - self.t0, 1e-9)
        if self.write:
            _log_metrics(self.run_dir, self.writer, step, self.last_loss, self.lr, self.rate,
                         elapsed, self.skipped)
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{self.rate:.0f}")
        self.sum.zero_()
        self.n, self.t0 = 0, now

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


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


def plot_loss(run_dir: Path) -> None:
    """loss.png from metrics.csv."""
    from .viz import plot_loss

    plot_loss(run_dir / ckpt.METRICS, run_dir / "loss.png")


def save_preview(cfg: Config, ema, schedule: Schedule, data: TensorData, path: Path,
               captions: CaptionBatches | None = None) -> None:
    """A preview grid (or scatter) of the EMA network, through the same sampling job as `ddpmlab sample`."""
    from .prompting import remember_encoder
    from .sampling import Run, generate
    from .viz import save_grid, save_scatter, save_prompt_grid

    ema.eval()
    n = 64 if data.is_image else 2000
    from .clusters import cluster_counts

    counts = cluster_counts(data.y, cfg.data.clusters) if cfg.data.clusters and data.y is not None else ()
    run = Run.from_training(cfg, ema, schedule, data.shape, class_names=data.class_names, cluster_counts=counts)
    if captions is None:  # unguided previews of a class-conditional run; text previews use the run's guidance
        run = dataclasses.replace(run, cfg=dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, guidance=0.0)))
    else:
        remember_encoder(cfg, run.device, captions.encoder)  # the training encoder, not a second copy
    samples = generate(run, n, prompts=list(captions.preview) if captions is not None else None)
    if not distributed.is_main():
        return
    if captions is not None:
        save_prompt_grid(samples, captions.preview, path)
    elif data.is_image:
        save_grid(samples, path, nrow=8)
    else:
        save_scatter(samples, path, reference=data.x[:2000])

"""Figures: sample grids, forward-process strips, denoising trajectories, GIFs, loss curves, 2D scatters.

Images come in as (N, C, H, W) tensors in [-1, 1]; points as (N, 2).
Every file is written through io.atomic_write (temp file, then rename).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .io import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def grid_image(x: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """A torchvision grid of (N, C, H, W) images in [-1, 1] as an (H', W', 3) uint8 array."""
    from torchvision.utils import make_grid

    grid = make_grid((x.detach().float().cpu().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=padding, pad_value=1.0)
    return (grid.mul(255).round().byte().permute(1, 2, 0)).numpy()


def _save_array(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buf, format="PNG")
    atomic_write(Path(path), lambda f: f.write(buf.getvalue()))


def save_grid(x: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid."""
    _save_array(grid_image(x, nrow), Path(path))


def _save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    atomic_write(Path(path), lambda f: f.write(buf.getvalue()))


def _show(ax, img: torch.Tensor) -> None:
    """Draw one (C, H, W) image in [-1, 1] on a matplotlib axis."""
    arr = to_uint8(img[None])[0]
    if arr.shape[-1] == 1:
        ax.imshow(arr[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(arr)
    ax.set_xticks([])
    ax.set_yticks([])


def forward_strip(rows: Sequence[tuple[str, torch.Tensor]], ts: Sequence[int], path: str | Path) -> None:
    """One row per (label, images x_t: (len(ts), C, H, W)), one column per t: the noising strip."""
    plt = _plt()
    fig, axes = plt.subplots(len(rows), len(ts), figsize=(1.6 * len(ts), 1.75 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, t in enumerate(ts):
            _show(axes[r][c], images[c])
            if r == 0:
                axes[r][c].set_title(f"t={t}", fontsize=9)
        axes[r][0].set_ylabel(label, fontsize=9)
    _save_figure(fig, path)


def trajectory_figure(ts: Sequence[int], xt: torch.Tensor, x0: torch.Tensor, path: str | Path) -> None:
    """xt, x0: (K, N, C, H, W) states at the K times ts. Top: x_t; bottom: the network's x0 estimate."""
    plt = _plt()
    K, N = xt.shape[0], xt.shape[1]
    fig, axes = plt.subplots(2 * N, K, figsize=(1.1 * K, 1.15 * 2 * N), squeeze=False)
    for k in range(K):
        for i in range(N):
            _show(axes[i][k], xt[k, i])
            _show(axes[N + i][k], x0[k, i])
        axes[0][k].set_title(f"t={ts[k]}", fontsize=8)
    axes[0][0].set_ylabel("x_t", fontsize=9)
    axes[N][0].set_ylabel("predicted x0", fontsize=9)
    fig.suptitle("Reverse process: noisy state x_t (top) and the model's estimate of x0 (bottom)", fontsize=9)
    _save_figure(fig, path)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, ms: int = 60, hold_last: int = 25) -> None:
    """Frames (H, W, 3) uint8 -> an endlessly looping GIF that pauses on the last frame."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames] + [Image.fromarray(frames[-1])] * hold_last
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)
    atomic_write(Path(path), lambda f: f.write(buf.getvalue()))


def scatter_frame(points: torch.Tensor, title: str = "", lim: float = 3.0, labels=None) -> np.ndarray:
    """Render (N, 2) points to an (H, W, 3) uint8 array (for GIF frames)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    _scatter(ax, points, labels, lim)
    ax.set_title(title, fontsize=10)
    fig.canvas.draw()
    frame = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return frame


def _scatter(ax, points: torch.Tensor, labels, lim: float) -> None:
    p = points.detach().float().cpu().numpy()
    c = None if labels is None else labels.cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.6, c=c, cmap="coolwarm" if c is not None else None)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")


def save_scatter(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, title: str = "samples") -> None:
    """2D samples (N, 2), beside the training data when given."""
    plt = _plt()
    lim = float(max(3.0, (reference if reference is not None else points).abs().max().item() * 1.15))
    lim = min(lim, 6.0)
    panels = [("training data", reference, None)] if reference is not None else []
    panels.append((title, points, labels))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, pts, lab) in zip(axes[0], panels):
        _scatter(ax, pts, lab, lim)
        ax.set_title(name, fontsize=10)
    _save_figure(fig, path)


def plot_loss(metrics_csv: str | Path, path: str | Path) -> None:
    """Training loss against step from metrics.csv, log scale."""
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss") not in (None, "", "nan")]
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3, which="both")
    _save_figure(fig, path)


def schedules_figure(T: int, path: str | Path) -> None:
    """alpha_bar_t and log-SNR of every registered schedule at T steps."""
    from .schedules import SCHEDULES, make_schedule

    curves = {}
    for name in SCHEDULES:
        s = make_schedule(name, T)
        curves[name] = (s.alpha_bar[1:].numpy(), s.log_snr[1:].numpy())
    plot_schedules(curves, T, path)


def plot_schedules(curves: dict[str, tuple[np.ndarray, np.ndarray]], T: int, path: str | Path) -> None:
    """curves: name -> (alpha_bar_t, lambda_t) for t = 1..T."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    t = np.arange(1, T + 1)
    for name, (alpha_bar, log_snr) in curves.items():
        a1.plot(t, alpha_bar, label=name)
        a2.plot(t, log_snr, label=name)
    a1.set_title("alpha_bar_t (signal variance kept)")
    a2.set_title("log-SNR lambda_t = log(alpha_bar / (1 - alpha_bar))")
    for ax in (a1, a2):
        ax.set_xlabel(f"t (T={T})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save_figure(fig, path)


def forward_figure(*, data: str | None, image: str | None, n: int, ts: Sequence[int], T: int,
                   schedules: Sequence[str], image_size: int, data_root: str, seed: int, out: str | Path) -> None:
    """The noising strip x_t ~ q(x_t | x_0) for images from a dataset or one picture, per schedule.

    The same noise eps is used for every t, so each row shows one path of corruption.
    """
    from .config import DataConfig
    from .data import load_dataset
    from .pictures import load_picture
    from .diffusion import q_sample
    from .errors import ConfigError, DataError
    from .schedules import make_schedule

    bad = [t for t in ts if not 0 <= t <= T]
    if bad or not ts:
        raise ConfigError(f"--t values must lie in [0, T={T}]; got {bad or 'none'}")
    try:
        scheds = [make_schedule(name, T) for name in schedules]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if image:
        x0 = load_picture(image, image_size)
    else:
        ds = load_dataset(DataConfig(name=data or "mnist-5k", root=data_root, image_size=image_size))
        if not ds.is_image:
            raise DataError(f"{ds.name} holds 2D points, not images; use an image dataset or --image")
        x0 = ds.x[:n]
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=gen)
    t = torch.tensor(list(ts))
    rows = []
    for sched in scheds:
        for i in range(len(x0)):
            x0_i = x0[i : i + 1].expand(len(ts), *x0.shape[1:])
            xt = q_sample(sched, x0_i, t, eps[i : i + 1].expand_as(x0_i))
            label = sched.name if len(scheds) > 1 or len(x0) == 1 else f"{sched.name} #{i}"
            rows.append((label, xt))
    forward_strip(rows, ts, out)


def guidance_figure(weights: Sequence[float], blocks: Sequence[torch.Tensor], per_row: int,
                    class_names: Sequence[str], path: str | Path) -> None:
    """Side-by-side grids, one per guidance weight w; each grid has one row per class."""
    plt = _plt()
    panel = 0.5 * per_row  # inches per block; the height follows the grid's aspect ratio
    fig, axes = plt.subplots(1, len(weights), figsize=(panel * len(weights) + 1, panel * len(class_names) / per_row + 0.6),
                             squeeze=False)
    for ax, w, imgs in zip(axes[0], weights, blocks):
        ax.imshow(grid_image(imgs, nrow=per_row), interpolation="nearest")
        ax.set_title(f"w = {w:g}", fontsize=10)
        ax.set_xticks([])
        step = imgs.shape[-1] + 2
        ax.set_yticks([2 + step * (i + 0.5) for i in range(len(class_names))])
        ax.set_yticklabels([_wrap(c) for c in class_names] if ax is axes[0][0] else [""] * len(class_names),
                           fontsize=8)
    fig.suptitle("classifier-free guidance: (1 + w) eps(x, c) - w eps(x)", fontsize=10)
    _save_figure(fig, path)


def _wrap(text: str, width: int = 28) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:2]) or '"" (null prompt)'


def save_prompt_grid(x: torch.Tensor, prompts: Sequence[str], path: str | Path) -> None:
    """A grid with one row per prompt (x in len(prompts) equal blocks), each prompt written beside its row."""
    plt = _plt()
    per_row = max(1, len(x) // max(1, len(prompts)))
    scale = max(0.4, x.shape[-1] / 64)  # inches per image: 32 px images at 0.5"
    fig, ax = plt.subplots(figsize=(scale * per_row + 2.4, scale * len(prompts) + 0.3))
    ax.imshow(grid_image(x[: per_row * len(prompts)], nrow=per_row), interpolation="nearest")
    step = x.shape[-1] + 2
    ax.set_xticks([])
    ax.set_yticks([2 + step * (i + 0.5) for i in range(len(prompts))])
    ax.set_yticklabels([_wrap(p) for p in prompts], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    _save_figure(fig, path)

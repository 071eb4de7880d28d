"""The README's figures, from trained runs: samplers x steps, a guidance sweep, an inpainting example.

    python benchmarks/figures.py --run runs/demo --cond-run runs/mnist-cond --out docs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ddpmlab.edit import inpaint
from ddpmlab.sample_files import guidance_sweep
from ddpmlab.sampling import load_run, sample, with_sample_settings
from ddpmlab.viz import _plt, _save_array, _save_figure, grid_image


def sampler_grid(run_dir: Path, out: Path, steps=(10, 20, 50), n: int = 8) -> None:
    """Rows: sampler x steps; the same 8 seeds in every row."""
    run = load_run(run_dir)
    rows = []
    for sampler in ("ddpm", "ddim", "dpmpp-2m", "euler", "heun"):
        for k in steps:
            r = with_sample_settings(run, sampler=sampler, steps=k, spacing="auto")
            rows.append((f"{sampler} {k}", sample(r, n)))
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.75, len(rows) * 0.8))
    for ax, (label, imgs) in zip(axes, rows):
        ax.imshow(grid_image(imgs, nrow=n), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    _save_figure(fig, out)


def inpaint_example(run_dir: Path, out: Path) -> None:
    """Real digits with their right half masked, filled by RePaint: original, masked input, four fills."""
    from ddpmlab.config import DataConfig
    from ddpmlab.data import load_dataset

    run = load_run(run_dir)
    run = with_sample_settings(run, steps=100, sampler="ddpm")
    digits = load_dataset(DataConfig(name="mnist-5k")).x[[3, 10, 25, 42]]
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., :, 14:] = 1
    rows = []
    for img in digits:
        filled = inpaint(run, img[None], mask, n=4, jump=10, resample=3)
        rows.append(torch.cat([img[None], img[None] * (1 - mask), filled]))
    grid = grid_image(torch.cat(rows), nrow=6)
    _save_array(grid.repeat(4, axis=0).repeat(4, axis=1), out)  # 4x nearest-neighbour for the README


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--cond-run")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    sampler_grid(Path(args.run), out / "samplers.png")
    inpaint_example(Path(args.run), out / "inpaint.png")
    if args.cond_run:
        run = with_sample_settings(load_run(args.cond_run), sampler="dpmpp-2m", steps=20, spacing="auto")
        guidance_sweep(run, [0, 1, 3, 5], out / "guidance_sweep.png", per_cell=6)
    print(f"wrote figures to {out}")


if __name__ == "__main__":
    main()

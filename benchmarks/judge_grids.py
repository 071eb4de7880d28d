"""Look at the judge's decisions: grids of samples it rejects and of samples it calls recognizable.

    python benchmarks/judge_grids.py runs/demo --n 500                       # sample a run, then judge
    python benchmarks/judge_grids.py runs/demo/samples.npz --out /tmp/judge   # judge saved samples
    python benchmarks/judge_grids.py --heldout --out /tmp/judge               # the judge's held-out real digits

Writes OUT/judge_rejected.png and OUT/judge_recognizable.png (up to 100 each, in sample order, so a grid can
be compared image by image with OUT/judge_all.png, the first 100 samples with a red frame on each reject) and
prints the share and class balance. For checking the judge against one's eye, not a metric of its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def load_images(source: str, n: int) -> torch.Tensor:
    """Images (N, 1, 28, 28) in [-1, 1]: from an .npz of samples, or n fresh samples of a run directory."""
    path = Path(source)
    if path.suffix == ".npz":  # what `ddpmlab sample` writes: uint8 images (N, H, W, C)
        with np.load(path) as f:
            x = torch.as_tensor(f["images"]).float().permute(0, 3, 1, 2)
        return x / 127.5 - 1
    from ddpmlab.sampling import class_labels, load_run, sample

    run = load_run(path)
    return sample(run, n, labels=class_labels(run, None, n) if run.cfg.model.num_classes else None)


def framed(x: torch.Tensor, reject: torch.Tensor) -> torch.Tensor:
    """RGB copies of x (N, 1, H, W) with a red 1-pixel frame on the rejected ones."""
    rgb = x.expand(-1, 3, -1, -1).clone()
    edge = torch.zeros_like(x[0, 0], dtype=torch.bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    red = torch.tensor([1.0, -1.0, -1.0])[:, None]
    for i in torch.nonzero(reject).flatten().tolist():
        rgb[i][:, edge] = red
    return rgb


def main() -> None:
    """Judge the images, write the three grids and print the share, balance and first 100 verdicts."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", help="a run directory or an .npz of samples")
    ap.add_argument("--heldout", action="store_true", help="judge the 1,000 held-out real digits instead")
    ap.add_argument("--n", type=int, default=500, help="samples to draw from a run (default 500)")
    ap.add_argument("--out", help="folder for the grids (default: the run directory or the .npz's folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from ddpmlab.metrics.judge import REJECT, heldout_digits, judge_for
    from ddpmlab.viz import save_grid

    if args.heldout == bool(args.source):
        ap.error("give a run directory or .npz, or --heldout")
    x = heldout_digits()[0] if args.heldout else load_images(args.source, args.n)
    judge = judge_for("mnist", (1, 28, 28))
    assert judge is not None
    v = judge.verdicts(x)
    out = Path(args.out or (args.source if args.source and Path(args.source).is_dir() else
                            Path(args.source or ".").parent))
    out.mkdir(parents=True, exist_ok=True)
    for name, sel in (("rejected", v == REJECT), ("recognizable", v < REJECT)):
        if bool(sel.any()):
            save_grid(x[sel][:100], out / f"judge_{name}.png", nrow=10)
    save_grid(framed(x[:100], v[:100] == REJECT), out / "judge_all.png", nrow=10)
    print(json.dumps(judge.score(x)))
    print("verdicts of the first 100 (row by row, '-' = reject):")
    for row in v[:100].reshape(-1, 10).tolist() if len(v) >= 100 else [v.tolist()]:
        print(" ".join("-" if c == REJECT else str(c) for c in row))
    print(f"wrote {out}/judge_rejected.png, judge_recognizable.png, judge_all.png")


if __name__ == "__main__":
    main()

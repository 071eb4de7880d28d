"""Memory stays flat over a long run: RSS at start and end of a 20k-step `moons` training run.

    python benchmarks/bench_memory.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ddpmlab.config import build_config
from ddpmlab.train import train


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "moons"
        train(build_config("moons", None, ["train.steps=1000"]), run, progress=False, log=lambda s: None)
        start = rss_mb()
        result = train(build_config("moons", None, [f"train.steps={args.steps}"]), run, resume=True,
                       progress=False, log=lambda s: None)
        end = rss_mb()
    print(f"moons, steps 1000 -> {result.step}: RSS {start:.1f} MB -> {end:.1f} MB (growth {end - start:+.1f} MB); "
          f"final loss {result.loss:.4f}")


if __name__ == "__main__":
    main()

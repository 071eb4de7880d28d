"""Memory stays flat over a long run: RSS at start and end of a 20k-step `moons` training run.

    python benchmarks/bench_memory.py [--steps 20000]

RSS is sampled every 0.5 s during the resumed run: the growth from 10% of the run to its end is what a per-step
leak would show; the jump at the start is the second run's own setup (data, model, optimizer, allocator caches).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
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
        samples: list[float] = []  # RSS every 0.5 s while the resumed run trains: a leak grows with the steps
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.5):
                samples.append(rss_mb())

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = train(build_config("moons", None, [f"train.steps={args.steps}"]), run, resume=True,
                       progress=False, log=lambda s: None)
        done.set()
        watcher.join()
        end = rss_mb()
    tenth, half = samples[len(samples) // 10], samples[len(samples) // 2]
    print(f"moons, steps 1000 -> {result.step}: RSS {start:.1f} MB before the resumed run, {tenth:.1f} MB at 10% "
          f"of it, {half:.1f} MB at 50%, {end:.1f} MB at the end (growth over the last 90%: {end - tenth:+.1f} MB); "
          f"final loss {result.loss:.4f}")


if __name__ == "__main__":
    main()

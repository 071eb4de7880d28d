"""What text conditioning costs: encoder load and encode times, and U-Net images/s with and without cross-attention.

    python benchmarks/bench_text.py [--threads 1] [--batch 64] [--reps 5] [--bf16]

The U-Net rows compare context_dim = 0 with context_dim = 384 (12-token prompts) for the MNIST preset's network
(28 px, attention at 7 px) and a 32 px RGB network with attention at 16 px: fp32 training steps (AdamW) and
no-grad forwards (what sampling runs; in bf16 autocast with --bf16, worth it only where the CPU has native
bf16). Each timing is the median of --reps, the two variants interleaved. Images/s and encode times are per
CPU second of this process (time.process_time), which a CPU shared with other jobs distorts far less than
wall-clock time; with --threads 1 that is images/s on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch


def encoder_times() -> dict[str, float]:
    from ddpmlab.text import load_default_encoder

    t0, c0 = time.perf_counter(), time.process_time()
    enc = load_default_encoder()
    out = {"load_wall_s": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0}
    enc.encode(["warm up"])
    for n in (1, 8, 64):
        prompts = [f"a photo of thing {1000 * n + i} on a table" for i in range(n)]
        t0 = time.process_time()
        enc.encode(prompts)
        out[f"encode_cpu_ms_per_prompt_at_{n}"] = (time.process_time() - t0) / n * 1e3
    t0 = time.process_time()
    enc.encode(prompts)
    out["cached_64_cpu_ms"] = (time.process_time() - t0) * 1e3
    return out


def images_per_second(cfg, batch: int, train: bool, reps: int, bf16: bool) -> float:
    from ddpmlab.models import UNet
    from ddpmlab.text import TextContext

    torch.manual_seed(0)
    net = UNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    x, t = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size), torch.randint(1, 1000, (batch,))
    ctx = None
    if cfg.context_dim:
        ctx = TextContext(torch.randn(batch, 12, cfg.context_dim), torch.ones(batch, 12, dtype=torch.bool),
                          torch.randn(batch, cfg.context_dim))

    def step() -> None:
        if train:
            loss = net(x, t, context=ctx).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                net(x, t, context=ctx)

    step()
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        step()
        times.append(time.process_time() - t0)
    return batch / sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="forwards in bf16 autocast")
    ap.add_argument("--out", default="benchmarks/results/bench_text.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ddpmlab.models import UNetConfig

    nets = {"mnist-28px": UNetConfig(in_channels=1, image_size=28, channels=32, attention_resolutions=(7,)),
            "rgb-32px": UNetConfig(in_channels=3, image_size=32, channels=32, attention_resolutions=(16,))}
    results: dict[str, object] = {"threads": args.threads, "batch": args.batch, "encoder": encoder_times()}
    print(json.dumps(results["encoder"]))
    for name, base in nets.items():
        for mode, train in (("train_fp32", True), ("forward_bf16" if args.bf16 else "forward_fp32", False)):
            rates = {0: [], 384: []}
            for _ in range(2):
                for dim in rates:
                    rates[dim].append(images_per_second(dataclasses.replace(base, context_dim=dim), args.batch,
                                                        train, args.reps, args.bf16))
            row = {"plain_img_s": max(rates[0]), "text_img_s": max(rates[384])}
            row["ratio"] = row["text_img_s"] / row["plain_img_s"]
            results[f"{name}/{mode}"] = row
            print(name, mode, json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

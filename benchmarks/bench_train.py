"""Training throughput at matched architecture: ddpmlab's U-Net and training step vs diffusers' UNet2DModel.

    python benchmarks/bench_train.py [--batch 128] [--repeats 5] [--steps 3]

Both networks: block widths (32, 64, 128), one residual block per level (two on the way up), attention at 8x8
and in the middle with 8-channel heads, 32x32 single-channel images: 2.73M parameters each. One step is what
each library's users run:
  diffusers  DDPMScheduler.add_noise, eps MSE, AdamW (default options), EMAModel.step; fp32, or bf16 autocast
  ddpmlab    its training step: t ~ U{1..T}, training_loss, gradient clipping, AdamW as train.py builds it
             (fused), the foreach EMA update; fp32, or bf16 autocast (its default on CPUs with native bf16)
Each ddpmlab variant runs with the allocator setting its training applies on the CPU
(runtime.keep_freed_memory), each diffusers variant with glibc's defaults; a fifth variant, diffusers bf16 with
ddpmlab's allocator setting, shows how much of the difference that setting alone makes.
The variants run interleaved (A B C D E, A B C D E, ...) in one process; each number is the median over
--repeats rounds of --steps steps. FLOPs per image (forward + backward) come from torch.utils.flop_counter;
the CPU's peaks are measured in the same run (benchmarks/common.py). Writes results/bench_train.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import (RESULTS, SIZE, allocator, ddpmlab_unet, diffusers_unet, machine, median,  # noqa: E402
                    median_seconds, parameters, peaks)


def ddpmlab_step(batch: int, bf16: bool):
    from ddpmlab.config import TrainConfig
    from ddpmlab.diffusion import sample_t, training_loss
    from ddpmlab.runtime import autocast
    from ddpmlab.schedules import make_schedule
    from ddpmlab.train import ema_update, make_optimizer

    torch.manual_seed(0)
    model = ddpmlab_unet().train()
    ema = ddpmlab_unet().eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    tc = TrainConfig(lr=2e-4)
    opt = make_optimizer(model, tc, torch.device("cpu"))
    schedule = make_schedule("linear", 1000)
    x0 = torch.randn(batch, 1, SIZE, SIZE).clamp(-1, 1)
    gen = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")

    def step() -> None:
        t = sample_t(batch, schedule.T, gen)
        eps = torch.randn(x0.shape, generator=gen)
        with autocast(bf16, cpu):
            loss = training_loss(model, schedule, x0, t, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        ema_update(ema, model, tc.ema_decay)

    return model, step


def diffusers_step(batch: int, bf16: bool):
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = diffusers_unet().train()
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, power=0.75)
    x0 = torch.randn(batch, 1, SIZE, SIZE).clamp(-1, 1)

    def step() -> None:
        noise = torch.randn(x0.shape)
        t = torch.randint(0, 1000, (batch,))
        xt = sched.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = model(xt, t).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.step(model.parameters())

    return model, step


def flops_per_image(model: torch.nn.Module, batch: int, call) -> float:
    x = torch.randn(batch, 1, SIZE, SIZE)
    t = torch.randint(1, 1000, (batch,))
    with FlopCounterMode(display=False) as counter:
        call(model, x, t).float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round (default 3)")
    ap.add_argument("--out", default=str(RESULTS / "bench_train.json"))
    args = ap.parse_args()

    # name: (library, precision, ddpmlab's allocator setting?, model, step)
    variants = {
        "diffusers fp32": ("diffusers", "fp32", False, *diffusers_step(args.batch, False)),
        "diffusers bf16": ("diffusers", "bf16", False, *diffusers_step(args.batch, True)),
        "ddpmlab fp32": ("ddpmlab", "fp32", True, *ddpmlab_step(args.batch, False)),
        "ddpmlab bf16": ("ddpmlab", "bf16", True, *ddpmlab_step(args.batch, True)),
        # not a target: how much of the difference the allocator setting alone makes
        "diffusers bf16, keep-freed allocator": ("diffusers", "bf16", True, *diffusers_step(args.batch, True)),
    }
    params = {name: parameters(v[3]) for name, v in variants.items()}
    flops = {
        "ddpmlab": flops_per_image(ddpmlab_unet(), args.batch, lambda m, x, t: m(x, t)),
        "diffusers": flops_per_image(diffusers_unet(), args.batch, lambda m, x, t: m(x, t).sample),
    }
    for _, _, keep, _, step in variants.values():  # warm-up: oneDNN picks and caches its kernels
        allocator(keep)
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, (_, _, keep, _, step) in variants.items():
            allocator(keep)
            s = median_seconds(step, args.steps)
            times[name].append(median(s))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {args.batch / times[n][-1]:.1f}" for n in times),
              flush=True)
    allocator(True)
    peak = peaks()

    rows = {}
    for name, ts in times.items():
        lib, prec = variants[name][:2]
        ips = args.batch / median(ts)
        achieved = ips * flops[lib] / 1e9
        rows[name] = {"images_per_s": ips, "step_s_median": median(ts), "step_s_all": ts,
                      "parameters": params[name], "gflop_per_image": flops[lib] / 1e9, "achieved_gflops": achieved,
                      "of_conv_peak_same_precision": achieved / peak[f"conv3x3_{prec}_gflops"],
                      "of_bf16_conv_peak": achieved / peak["conv3x3_bf16_gflops"]}
    pairs = [("ddpmlab bf16", "diffusers fp32"), ("ddpmlab bf16", "diffusers bf16"), ("ddpmlab fp32", "diffusers fp32"),
             ("ddpmlab bf16", "diffusers bf16, keep-freed allocator")]
    ratios = {f"{a} / {b}": rows[a]["images_per_s"] / rows[b]["images_per_s"] for a, b in pairs}
    # the same ratios round by round (each round's A and B ran back to back): their spread shows the noise
    per_round = {f"{a} / {b}": [tb / ta for ta, tb in zip(times[a], times[b])] for a, b in pairs}
    print(f"\nbatch {args.batch}, {SIZE}x{SIZE}, {machine()['cpu']}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print("| variant | params | img/s | GFLOP/img | GFLOP/s | % conv peak (same prec.) | % bf16 conv peak |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['images_per_s']:.1f} | {r['gflop_per_image']:.2f} | "
              f"{r['achieved_gflops']:.0f} | {100 * r['of_conv_peak_same_precision']:.0f}% | "
              f"{100 * r['of_bf16_conv_peak']:.0f}% |")
    print("peaks (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x (rounds: {min(per_round[k]):.2f}-{max(per_round[k]):.2f}x, "
              f"median {median(per_round[k]):.2f}x)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**machine(), "batch": args.batch, "repeats": args.repeats, "steps": args.steps,
                               "command": " ".join(["python", *sys.argv]), "peaks_gflops": peak, "variants": rows,
                               "ratios": ratios, "ratios_per_round": per_round}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

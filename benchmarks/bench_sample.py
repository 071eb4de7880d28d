"""Sampling throughput at 20 network evaluations, batch 256: ddpmlab vs diffusers' pipeline, same-shaped networks.

    python benchmarks/bench_sample.py [--batch 256] [--nfe 20] [--repeats 3] [--guidance 3]

Networks: the matched 2.73M-parameter U-Nets of bench_train.py (random weights: speed does not depend on
them), 32x32 single-channel images. Sampler: DPM-Solver++(2M), ddpmlab's `dpmpp-2m` and diffusers'
DPMSolverMultistepScheduler, linear 1000-step schedule.
  diffusers fp32          DDPMPipeline(unet, DPMSolverMultistepScheduler) called as its users call it
  diffusers bf16          the same call inside torch.autocast(bfloat16) and torch.inference_mode()
  ddpmlab                 sampling.generate with its defaults for a v-prediction network like the image
                          presets' (bf16 autocast on CPUs with native bf16; the network's cost is the same
                          whatever it predicts)
  ddpmlab fp32            the same with sample.precision = "fp32"
With --guidance W (classifier-free guidance, class-conditional networks with 10 classes + null):
  diffusers               the loop diffusers' guided pipelines use: cond and uncond in one batched forward
  ddpmlab                 sampling.generate with sample.guidance = W: also one batched forward (guidance.guided)
ddpmlab runs with the allocator setting its sampling applies on the CPU (runtime.keep_freed_memory), diffusers with
glibc's defaults; "diffusers bf16, keep-freed allocator" rows show what that setting alone gives diffusers.
Variants run interleaved in one process; each number is the median over --repeats rounds.
Writes results/bench_sample.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, SIZE, allocator, ddpmlab_unet, diffusers_unet, machine, median, median_seconds  # noqa: E402

K = 10  # classes of the conditional networks


def bf16_context(enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    stack.enter_context(torch.inference_mode())
    return stack


def diffusers_plain(batch: int, nfe: int, bf16: bool):
    from diffusers import DDPMPipeline, DPMSolverMultistepScheduler

    pipe = DDPMPipeline(unet=diffusers_unet().eval(), scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)

    def run() -> None:
        with bf16_context(bf16):
            pipe(batch_size=batch, num_inference_steps=nfe, generator=torch.Generator().manual_seed(0),
                 output_type="np")

    return run


def diffusers_guided(batch: int, nfe: int, bf16: bool, w: float):
    from diffusers import DPMSolverMultistepScheduler

    unet = diffusers_unet(num_classes=K).eval()
    sched = DPMSolverMultistepScheduler()
    labels = torch.arange(batch) % K
    both = torch.cat([labels, torch.full_like(labels, K)])  # the null class

    @torch.no_grad()
    def run() -> None:
        with bf16_context(bf16):
            sched.set_timesteps(nfe)
            x = torch.randn(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
            for t in sched.timesteps:
                eps_c, eps_u = unet(torch.cat([x, x]), t, class_labels=both).sample.float().chunk(2)
                x = sched.step((1 + w) * eps_c - w * eps_u, t, x).prev_sample

    return run


def ddpmlab_run(batch: int, nfe: int, precision: str, w: float = 0.0):
    from ddpmlab.config import build_config
    from ddpmlab.sampling import Run, generate
    from ddpmlab.schedules import schedule_from_config

    cfg = build_config(None, settings={
        "model": {"num_classes": K if w else 0},
        "diffusion": {"schedule": "linear", "T": 1000, "prediction": "v"},  # as the presets: bf16 under auto
        "sample": {"sampler": "dpmpp-2m", "steps": nfe, "batch_size": batch, "precision": precision,
                   "guidance": w}})
    model = ddpmlab_unet(num_classes=K if w else 0).eval()
    job = Run.from_training(cfg, model, schedule_from_config(cfg.diffusion), (1, SIZE, SIZE))
    labels = torch.arange(batch) % K if w else None

    def run() -> None:
        generate(job, batch, labels=labels)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--nfe", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--guidance", type=float, default=3.0, help="guidance weight for the guided variants (0: none)")
    ap.add_argument("--out", default=str(RESULTS / "bench_sample.json"))
    args = ap.parse_args()
    b, k, w = args.batch, args.nfe, args.guidance
    keep = "diffusers bf16, keep-freed allocator"  # not a target: what the allocator setting alone makes
    # name: (ddpmlab's allocator setting?, run); diffusers runs with glibc's defaults, as its users run it
    variants = {
        "diffusers fp32": (False, diffusers_plain(b, k, False)),
        "diffusers bf16": (False, diffusers_plain(b, k, True)),
        "ddpmlab": (True, ddpmlab_run(b, k, "auto")),
        "ddpmlab fp32": (True, ddpmlab_run(b, k, "fp32")),
        keep: (True, diffusers_plain(b, k, True)),
    }
    if w:
        variants.update({
            "diffusers fp32 + guidance": (False, diffusers_guided(b, k, False, w)),
            "diffusers bf16 + guidance": (False, diffusers_guided(b, k, True, w)),
            "ddpmlab + guidance": (True, ddpmlab_run(b, k, "auto", w)),
            keep + " + guidance": (True, diffusers_guided(b, k, True, w)),
        })
    with torch.no_grad():  # warm-up at a small batch: oneDNN kernel selection, first-call overheads
        for f in [diffusers_plain(8, 2, False), diffusers_plain(8, 2, True), ddpmlab_run(8, 2, "auto")]:
            f()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, (keep_freed, run) in variants.items():
            allocator(keep_freed)
            times[name] += median_seconds(run, 1)
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {b / times[n][-1]:.1f}" for n in times), flush=True)
    rows = {name: {"images_per_s": b / median(ts), "seconds_median": median(ts), "seconds_all": ts}
            for name, ts in times.items()}

    def ratio(a: str, c: str) -> float:
        return rows[a]["images_per_s"] / rows[c]["images_per_s"]

    ratios = {"ddpmlab / diffusers fp32": ratio("ddpmlab", "diffusers fp32"),
              "ddpmlab / diffusers bf16": ratio("ddpmlab", "diffusers bf16"),
              "ddpmlab fp32 / diffusers fp32": ratio("ddpmlab fp32", "diffusers fp32"),
              f"ddpmlab / {keep}": ratio("ddpmlab", keep)}
    if w:
        ratios.update({"ddpmlab + guidance / diffusers fp32 + guidance":
                       ratio("ddpmlab + guidance", "diffusers fp32 + guidance"),
                       "ddpmlab + guidance / diffusers bf16 + guidance":
                       ratio("ddpmlab + guidance", "diffusers bf16 + guidance"),
                       f"ddpmlab + guidance / {keep} + guidance": ratio("ddpmlab + guidance", keep + " + guidance")})
    print(f"\n{k} NFE, batch {b}, {SIZE}x{SIZE}, {machine()['cpu']}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print("| variant | images/s | seconds per batch |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['images_per_s']:.1f} | {r['seconds_median']:.1f} |")
    for name, v in ratios.items():
        print(f"{name}: {v:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**machine(), "batch": b, "nfe": k, "guidance": w, "repeats": args.repeats,
                               "command": " ".join(["python", *sys.argv]), "variants": rows, "ratios": ratios},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

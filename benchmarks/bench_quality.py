"""Quality per CPU-minute: Fashion-MNIST FID after the same wall-clock training budget, ddpmlab vs diffusers.

    python benchmarks/bench_quality.py --minutes 15            # all parts, about 75 minutes on 2 cores
    python benchmarks/bench_quality.py --minutes 2 --n 500     # a quick smoke run

Parts, trained one after the other on the same machine (choose with --parts, default a,c,cond,b):
  a     ddpmlab's `fashion-mnist` preset (unconditional)
  b     diffusers as its users run it: UNet2DModel (32, 64, 128), attention at 8x8 (2.73M parameters) on
        32x32 (padded) images, DDPMScheduler 1000 linear steps, eps-prediction, AdamW 2e-4, EMA (0.9999 with
        the example script's warmup), batch 128, fp32; sampled with DDIM
  c     a tuned diffusers recipe: UNet2DModel (32, 64, 64), 1 layer per block, no attention, native 28x28,
        bf16 autocast, AdamW 1e-3 with betas (0.9, 0.99), 100 warmup steps and cosine decay to 10%, grad clip 1,
        EMA 0.999 with warmup, min-SNR-5 weighted eps loss, random horizontal flips, batch 128, linear T = 1000;
        sampled with DPMSolverMultistepScheduler at its defaults, the network under bf16 autocast as in training
  cond  ddpmlab's `fashion-mnist-cond` preset, sampled with its guidance; writes a grid with one row per class

Every recipe gets the same budget, which also ends its learning-rate schedule: ddpmlab's parts re-estimate the
step the budget ends at as they train (train.Budget), and diffusers' parts do the same every 10 steps after a
30-step probe. Then 2,000 samples per part at each --nfe (20 and 50 network evaluations; ddpmlab with its preset
sampler settings, DPM-Solver++(2M) for c, DDIM for b): ddpmlab with its defaults (bf16 autocast for its
v-prediction presets), c under bf16 autocast as it trained, b in fp32 (sampling time is not part of the budget),
scored by ddpmlab's Fashion-MNIST classifier features (FID/KID against the 10k test images). ddpmlab's parts run
with the allocator setting its training applies on the CPU, diffusers' with glibc's defaults. Results: JSON after
every part, and a grid PNG per part.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, allocator, machine  # noqa: E402


# --------------------------------------------------------------------------------------------- ddpmlab parts
def train_ddpmlab(preset: str, minutes: float, out: Path) -> dict:
    from ddpmlab.config import build_config
    from ddpmlab.train import train

    cfg = build_config(preset, settings={"train": {"steps": 1_000_000, "minutes": minutes, "sample_every": 0}})
    r = train(cfg, out, overwrite=True, progress=True)
    return {"steps": r.step, "train_seconds": round(r.seconds, 1),
            "train_images_per_s": round(r.images_per_s, 1), "batch_size": cfg.train.batch_size}


def sample_ddpmlab(run_dir: Path, n: int, nfe: int, grid: Path | None) -> tuple[torch.Tensor, float]:
    from ddpmlab.sample_files import write_samples
    from ddpmlab.sampling import class_labels, load_run, sample, with_sample_settings

    run = with_sample_settings(load_run(run_dir), steps=nfe)  # the preset's sampler, spacing and guidance
    labels = class_labels(run, None, n) if run.cfg.model.num_classes else None
    t = time.perf_counter()
    x = sample(run, n, labels=labels)
    seconds = time.perf_counter() - t
    if grid is not None:
        k = run.cfg.model.num_classes
        pick = torch.cat([torch.nonzero(labels == c)[:10, 0] for c in range(k)]) if k else torch.arange(100)
        write_samples(run, x[pick], grid, None if labels is None else labels[pick])
    return x, seconds


# -------------------------------------------------------------------------------------------- diffusers parts
def fashion_train_images() -> torch.Tensor:
    from ddpmlab.config import DataConfig
    from ddpmlab.data import load_dataset

    return load_dataset(DataConfig(name="fashion-mnist"), "train").x  # (60000, 1, 28, 28) in [-1, 1]


def diffusers_recipe(part: str):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

    if part == "b":
        unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(32, 64, 128),
                           layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
        sched = dict(num_train_timesteps=1000, beta_schedule="linear")
        return unet, DDPMScheduler(**sched), lambda: DDIMScheduler(**sched)
    unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                       add_attention=False)
    sched = dict(num_train_timesteps=1000)  # the default linear schedule (squaredcos_cap_v2's alpha_bar reaches 0
    # at t = 999, where diffusers' DPM-Solver++ needs lambda_min_clipped)
    return unet, DDPMScheduler(**sched), lambda: DPMSolverMultistepScheduler(**sched)  # its defaults


def train_diffusers(part: str, minutes: float, batch: int = 128, seed: int = 0, save_to: Path | None = None
                    ) -> tuple[dict, torch.nn.Module]:
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    x_all = fashion_train_images()
    if part == "b":
        x_all = F.pad(x_all, (2, 2, 2, 2), value=-1.0)  # 32x32, as the reference runs it
    unet, sched, _ = diffusers_recipe(part)
    tuned = part == "c"
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, betas=(0.9, 0.99)) if tuned else \
        torch.optim.AdamW(unet.parameters(), lr=2e-4)
    ema = EMAModel(unet.parameters(), decay=0.999 if tuned else 0.9999, use_ema_warmup=True, power=0.75)
    acp = sched.alphas_cumprod
    snr = acp / (1 - acp)
    gen = torch.Generator().manual_seed(seed)

    def step(k: int, total: int) -> float:
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        x0 = x_all[idx]
        if tuned:
            x0 = torch.where(torch.rand(batch, 1, 1, 1, generator=gen) < 0.5, x0.flip(-1), x0)
            warm = min(1.0, (k + 1) / 100)
            cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, k / max(total, 1))))
            for g in opt.param_groups:
                g["lr"] = 1e-3 * warm * cos
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tuned):
            pred = unet(xt, t).sample
        err = (pred.float() - noise).square().mean(dim=(1, 2, 3))
        loss = (err * (snr[t].clamp(max=5.0) / snr[t])).mean() if tuned else err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tuned:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        return float(loss.detach())

    unet.train()
    t0 = time.perf_counter()
    for k in range(30):  # probe (its updates are kept; its time is not charged)
        step(k, 10_000)
    s_per_step = (time.perf_counter() - t0) / 30
    planned = first_plan = max(100, int(minutes * 60 / s_per_step))
    t0, k = time.perf_counter(), 0
    from tqdm.auto import tqdm

    bar = tqdm(total=planned, desc=f"train {part}", unit="step")
    while k < planned and time.perf_counter() - t0 < minutes * 60:
        loss = step(k, planned)
        k += 1
        bar.update(1)
        if k % 10 == 0:  # as ddpmlab's train.Budget: the schedule ends where the budget does, at the measured speed
            elapsed = time.perf_counter() - t0
            planned = k + int(max(0.0, minutes * 60 - elapsed) / (elapsed / k))
            bar.total = planned
        if k % 50 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")
    bar.close()
    seconds = time.perf_counter() - t0
    ema.copy_to(unet.parameters())
    unet.eval()
    if save_to is not None:
        unet.save_pretrained(save_to)  # safetensors + config.json: resample with UNet2DModel.from_pretrained
    return {"steps": k, "first_planned_steps": first_plan, "probe_steps": 30, "train_seconds": round(seconds, 1),
            "train_images_per_s": round(k * batch / seconds, 1), "batch_size": batch,
            "parameters": sum(p.numel() for p in unet.parameters())}, unet


@torch.no_grad()
def sample_diffusers(part: str, unet: torch.nn.Module, n: int, nfe: int, batch: int = 250, seed: int = 0,
                     bf16: bool = True) -> tuple[torch.Tensor, float]:
    _, _, make_scheduler = diffusers_recipe(part)
    sched = make_scheduler()
    gen = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    out = []
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        sched.set_timesteps(nfe)
        x = torch.randn(min(batch, n - start), 1, size, size, generator=gen) * sched.init_noise_sigma
        for t in sched.timesteps:  # c: bf16 autocast as it trained; b: fp32, as its users run it
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and part == "c"):
                eps = unet(sched.scale_model_input(x, t), t).sample
            x = sched.step(eps.float(), t, x).prev_sample
        out.append(x.clamp(-1, 1))
    seconds = time.perf_counter() - t0
    x = torch.cat(out)
    return (x[:, :, 2:30, 2:30] if size == 32 else x), seconds


# ----------------------------------------------------------------------------------------------------- scoring
def scorer(n: int):
    from ddpmlab.config import build_config
    from ddpmlab.evaluate import Scorer, default_cache_dir
    from ddpmlab.sampling import LoadedRun

    cfg = build_config("fashion-mnist")
    run = LoadedRun(Path("."), cfg, torch.nn.Identity(), None, (1, 28, 28), (), 0, torch.device("cpu"))  # type: ignore[arg-type]
    return Scorer(run, n, "auto", None, 0, default_cache_dir(), print)


def save_grid(x: torch.Tensor, path: Path) -> None:
    from ddpmlab.viz import save_grid as grid

    grid(x[:100], path, nrow=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget per part (default 15)")
    ap.add_argument("--parts", default="a,c,cond,b", help="which parts, in order (default a,c,cond,b)")
    ap.add_argument("--n", type=int, default=2000, help="samples scored per part and NFE (default 2000)")
    ap.add_argument("--nfe", default="20,50", help="network evaluations to sample at (default 20,50)")
    ap.add_argument("--workdir", default="runs/bench-quality", help="where the ddpmlab runs go")
    ap.add_argument("--out", default=str(RESULTS / "bench_quality.json"))
    ap.add_argument("--c-fp32", action="store_true", help="sample part c in fp32 instead of bf16 autocast "
                    "(writes quality_c_fp32_nfeN.png and the part as c-fp32)")
    ap.add_argument("--from-saved", action="store_true", help="diffusers parts: sample the weights saved by an "
                    "earlier run (in --workdir) instead of training")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"a", "b", "c", "cond"}
    if unknown:
        sys.exit(f"unknown part(s) {', '.join(sorted(unknown))}; choose from a, b, c, cond")
    nfes = [int(v) for v in args.nfe.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(out.read_text()) if out.exists() else {}
    report.update({**machine(), "minutes": args.minutes, "n": args.n})
    report.setdefault("parts", {})
    score = scorer(args.n)
    report["floor"] = {k: score.floor.to_json()[k] for k in ("fid", "kid")}
    for part in parts:
        print(f"\n=== part {part}: training for {args.minutes:g} minutes ===", flush=True)
        entry: dict = {"command": " ".join(["python", *sys.argv])}
        allocator(part in ("a", "cond"))  # ddpmlab's setting for its parts, glibc's defaults for diffusers'
        if part in ("a", "cond"):
            run_dir = Path(args.workdir) / ("fashion-mnist" if part == "a" else "fashion-mnist-cond")
            entry["train"] = train_ddpmlab("fashion-mnist" if part == "a" else "fashion-mnist-cond",
                                           args.minutes, run_dir)
            draw = lambda nfe, grid: sample_ddpmlab(run_dir, args.n, nfe, grid)  # noqa: E731
        elif args.from_saved:  # sample again from the weights a previous run saved
            from diffusers import UNet2DModel

            entry["train"] = report["parts"][part]["train"]
            unet = UNet2DModel.from_pretrained(Path(args.workdir) / f"diffusers-{part}").eval()
        else:
            entry["train"], unet = train_diffusers(part, args.minutes, save_to=Path(args.workdir) / f"diffusers-{part}")
        if part in ("b", "c"):
            draw = lambda nfe, grid: sample_diffusers(part, unet, args.n, nfe, bf16=not args.c_fp32)  # noqa: E731
        entry["samples"] = {}
        key = "c-fp32" if part == "c" and args.c_fp32 else part
        for nfe in nfes:
            grid = RESULTS / f"quality_{key.replace('-', '_')}_nfe{nfe}.png"
            x, seconds = draw(nfe, grid if part == "cond" else None)
            if part != "cond":
                save_grid(x, grid)
            m = score.score(x).to_json()
            entry["samples"][str(nfe)] = {"fid": m["fid"], "kid": m["kid"], "precision": m["precision"],
                                          "recall": m["recall"], "sampling_s": round(seconds, 1), "grid": grid.name}
            print(f"part {part}, {nfe} NFE: FID {m['fid']:.2f}, KID {m['kid']:.4f} ({seconds:.0f}s sampling)",
                  flush=True)
        report["parts"][key] = entry
        out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| part | steps | img/s | " + " | ".join(f"FID@{k}" for k in nfes) + " |")
    for part, e in report["parts"].items():
        fids = " | ".join(f"{e['samples'][str(k)]['fid']:.2f}" if str(k) in e["samples"] else "-" for k in nfes)
        print(f"| {part} | {e['train']['steps']} | {e['train']['train_images_per_s']} | {fids} |")
    p = report["parts"]
    for k in nfes:
        for ref in ("b", "c"):
            if "a" in p and ref in p and str(k) in p["a"]["samples"] and str(k) in p[ref]["samples"]:
                ratio = p["a"]["samples"][str(k)]["fid"] / p[ref]["samples"][str(k)]["fid"]
                report.setdefault("ratios", {})[f"a/{ref}@{k}"] = ratio
                print(f"FID ratio ddpmlab / {ref} at {k} NFE: {ratio:.3f}")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

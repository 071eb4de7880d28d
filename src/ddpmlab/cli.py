"""`ddpmlab train | sample | edit | inpaint | interpolate | invert | eval | nll | forward | schedules | presets`.

Each command parses its arguments, builds a config and makes library calls; no math here.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from .cli_text import check_text_guidance, eval_prompts, prompts_of, text_options
from .errors import ConfigError, DDPMLabError, RunError

EXAMPLES = {
    "train": """examples:
  ddpmlab train --preset mnist --out runs/mnist
  ddpmlab train --preset moons --set train.steps=3000 --out runs/moons
  ddpmlab train --preset mnist --set model.channels=64 --set train.batch_size=128 --minutes 20
  ddpmlab train --resume runs/mnist --set train.steps=8000""",
    "sample": """examples:
  ddpmlab sample runs/mnist --n 64 --seed 0 --out samples.png
  ddpmlab sample runs/mnist --steps 250 --variance beta --trajectory --gif
  ddpmlab sample runs/moons --n 2000 --out moons.png --gif
  ddpmlab sample runs/mnist-cond --class 7 --guidance 3 --sampler dpmpp-2m --steps 20
  ddpmlab sample runs/mnist-cond --guidance-sweep 0,1,3,5 --out sweep.png""",
    "forward": """examples:
  ddpmlab forward --data mnist-5k --t 0,50,100,150,199 --T 200 --out forward.png
  ddpmlab forward --image photo.png --image-size 64 --schedule linear,cosine --out strip.png""",
    "schedules": """examples:
  ddpmlab schedules --T 1000 --out schedules.png""",
    "presets": """examples:
  ddpmlab presets""",
    "edit": """examples:
  ddpmlab edit runs/mnist --image digit.png --strength 0.6 --n 6 --out edits.png""",
    "inpaint": """examples:
  ddpmlab inpaint runs/mnist --image digit.png --mask mask.png --out filled.png
  ddpmlab inpaint runs/mnist --image digit.png --mask mask.png --resample 5 --jump 10
(white mask pixels are filled in, black ones kept)""",
    "interpolate": """examples:
  ddpmlab interpolate runs/mnist --seed-a 1 --seed-b 2 --frames 8 --out interp.png""",
    "invert": """examples:
  ddpmlab invert runs/mnist --image a.png --image b.png --out latents.npz""",
    "eval": """examples:
  ddpmlab eval runs/mnist --n 2000 --sampler dpmpp-2m --steps 20
  ddpmlab eval runs/mnist --n 1000 --sweep-steps 5,10,20 --samplers ddim,dpmpp-2m
  ddpmlab eval runs/mnist-cond --n 1000 --guidance-sweep 0,1,3
  ddpmlab eval runs/moons --n 2000
  ddpmlab eval runs/cifar10 --features inception --inception-weights pt_inception.safetensors
(writes RUN/eval.json and RUN/eval.md; reference features are cached in ~/.cache/ddpmlab/eval)""",
    "nll": """examples:
  ddpmlab nll runs/mnist --n 500
  ddpmlab nll runs/mnist --n 200 --timesteps 100   # stratified over t: 101 instead of 1000 evaluations per image
(writes RUN/nll.json)""",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _csv_floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 or v != v for v in values):
        raise ConfigError(f"guidance weights must be non-negative numbers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddpmlab", description="Denoising diffusion models: train, sample, look inside.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("train", "Train a diffusion model into a run directory.")
    p.add_argument("--preset", help="a preset name (see `ddpmlab presets`)")
    p.add_argument("--config", help="a TOML file overlaid on the preset")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting")
    p.add_argument("--out", help="run directory (default runs/PRESET)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    p.add_argument("--force", action="store_true", help="start over in --out even if it holds a run")
    p.add_argument("--minutes", type=float, help="wall-clock budget; stops cleanly and saves")
    p.add_argument("--steps", type=_positive, help="shortcut for --set train.steps=N")
    p.add_argument("--data", help="shortcut for --set data.name=NAME (mnist-5k, mnist, folder:PATH, moons, ...)")
    p.add_argument("--data-root", help="where torchvision datasets are downloaded / looked for")
    p.add_argument("--image-size", type=int, help="resize images to N x N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("sample", "Generate samples from a trained run.")
    p.add_argument("run", help="run directory")
    p.add_argument("--n", type=int, help="number of samples (default 64; 8 per prompt with --prompt)")
    p.add_argument("--steps", type=int, help="network evaluations (default: the run's sample.steps)")
    p.add_argument("--sampler", help="sampler name (default: the run's sample.sampler)")
    text_options(p, several=True)
    p.add_argument("--variance", choices=["beta", "posterior"], help="DDPM sigma_t^2: beta_t or beta-tilde_t")
    p.add_argument("--spacing", choices=["auto", "leading", "trailing", "linspace", "quadratic", "karras", "logsnr"],
                   help="timestep spacing (default: the sampler's own, see README)")
    p.add_argument("--eta", type=float, help="DDIM stochasticity (0 deterministic, 1 ancestral)")
    p.add_argument("--churn", type=float, help="Heun stochastic churn S_churn (Karras et al. 2022)")
    p.add_argument("--class", dest="klass", metavar="C", help="conditional runs: a class index or name, or 'all' "
                   "(one row per class; the default)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight w: (1+w) eps(x,c) - w eps(x)")
    p.add_argument("--guidance-sweep", metavar="W,W,...", help="write one figure: rows = classes, columns = w")
    p.add_argument("--seed", type=int, help="same seed, same samples (whatever the batch size)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--weights", choices=["ema", "model"], default="ema", help="EMA (default) or online weights")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="network precision (default: the run's sample.precision; auto = bf16 where native)")
    p.add_argument("--out", help="PNG to write (default RUN/samples.png); an .npz is written beside it")
    p.add_argument("--trajectory", nargs="?", const="", help="also write the denoising trajectory figure")
    p.add_argument("--gif", nargs="?", const="", help="also write a GIF of the reverse process")
    p.add_argument("--device", default="auto")

    p = command("forward", "Draw the forward (noising) process q(x_t | x_0) as a strip.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", default="mnist-5k", help="dataset to take images from (default mnist-5k)")
    src.add_argument("--image", help="a picture file instead (RGB kept)")
    p.add_argument("--n", type=_positive, default=3, help="images from --data (default 3)")
    p.add_argument("--t", type=_csv_ints, default=[0, 50, 100, 250, 500, 750, 1000], help="comma-separated t")
    p.add_argument("--T", type=_positive, default=1000, help="number of diffusion steps (default 1000)")
    p.add_argument("--schedule", default="linear", help="one or more comma-separated schedules")
    p.add_argument("--image-size", type=int, default=0)
    p.add_argument("--data-root", default="data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="forward.png")

    p = command("schedules", "Plot alpha_bar_t and log-SNR of every schedule.")
    p.add_argument("--T", type=_positive, default=1000)
    p.add_argument("--out", default="schedules.png")

    command("presets", "List the presets.")

    def edit_common(p: argparse.ArgumentParser, image_required: bool = True) -> None:
        p.add_argument("run", help="run directory")
        text_options(p, several=False)
        p.add_argument("--steps", type=int, help="network evaluations (default: the run's sample.steps)")
        p.add_argument("--seed", type=int)
        p.add_argument("--class", dest="klass", metavar="C", help="class index or name (conditional runs)")
        p.add_argument("--guidance", type=float, help="classifier-free guidance weight w")
        p.add_argument("--weights", choices=["ema", "model"], default="ema")
        p.add_argument("--device", default="auto")

    p = command("edit", "SDEdit: noise an image part-way, then denoise it with the model.")
    edit_common(p)
    p.add_argument("--image", required=True)
    p.add_argument("--strength", type=float, default=0.6, help="t0 = strength * T (default 0.6)")
    p.add_argument("--sampler", help="sampler name (default: the run's)")
    p.add_argument("--n", type=_positive, default=4, help="edits with different seeds (default 4)")
    p.add_argument("--out", default="edit.png")

    p = command("inpaint", "RePaint: fill the white pixels of a mask, keep the rest of the image.")
    edit_common(p)
    p.add_argument("--image", required=True)
    p.add_argument("--mask", required=True, help="white (>= 128) = fill in, black = keep")
    p.add_argument("--resample", type=_positive, default=1, help="RePaint resampling count (1 = none)")
    p.add_argument("--jump", type=_positive, default=10, help="RePaint jump length in sampler steps")
    p.add_argument("--n", type=_positive, default=4)
    p.add_argument("--out", default="inpaint.png")

    p = command("interpolate", "Decode a spherical interpolation between two seeds' noise with DDIM.")
    edit_common(p)
    p.add_argument("--seed-a", type=int, default=1)
    p.add_argument("--seed-b", type=int, default=2)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--out", default="interpolate.png")

    p = command("invert", "DDIM inversion: images -> latents x_T (.npz), with their reconstruction.")
    edit_common(p)
    p.add_argument("--image", action="append", required=True, help="repeat for several images")
    p.add_argument("--out", default="latents.npz")

    p = command("eval", "Score a run's samples: FID/KID/precision/recall (images) or exact 2D metrics, with floors.")
    p.add_argument("run", help="run directory")
    p.add_argument("--n", type=int, default=2000, help="samples to score (default 2000)")
    p.add_argument("--sampler", help="sampler name (default: the run's sample.sampler)")
    p.add_argument("--steps", type=int, help="network evaluations (default: the run's sample.steps)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--guidance", type=float, help="classifier-free guidance weight w (conditional runs)")
    g.add_argument("--guidance-sweep", metavar="W,W,...", help="also score these guidance weights")
    p.add_argument("--sweep-steps", type=_csv_ints, metavar="K,K,...", help="also score each --samplers at these steps")
    p.add_argument("--samplers", metavar="S,S,...", help="samplers for --sweep-steps (default: the run's)")
    p.add_argument("--features", choices=["auto", "classifier", "inception"], default="auto",
                   help="feature network: auto (shipped MNIST/Fashion classifier, else Inception if weights are "
                        "given, else a pixel projection), classifier, inception")
    p.add_argument("--inception-weights", metavar="PATH", help="inception_v3 state dict (.safetensors or .pth)")
    p.add_argument("--prompts", choices=["eval"], help="text runs: score prompt alignment on the held-out prompts "
                   "(templated data: the shipped classifier; captions: retrieval) instead of FID")
    p.add_argument("--per-prompt", type=_positive, help="with --prompts: samples per prompt (default 8)")
    p.add_argument("--seed", type=int, help="sampling seed (default: the run's sample.seed)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--device", default="auto")

    p = command("nll", "Negative log-likelihood in bits/dim from the variational bound (Ho et al. 2020, eq. 5).")
    p.add_argument("run", help="run directory")
    p.add_argument("--n", type=int, default=500, help="real images to score (default 500)")
    p.add_argument("--timesteps", type=int, help="stratified estimate over K timesteps (default: every t, exact)")
    p.add_argument("--variance", choices=["posterior", "beta"], default="posterior",
                   help="reverse-process variance: beta-tilde_t (default) or beta_t")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--device", default="auto")
    return parser


def _check_out(path: str | Path) -> Path:
    """An output file whose folder exists and is writable."""
    import os

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"output folder {parent} does not exist; create it or choose another --out")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"output folder {parent} is not writable; choose another --out")
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give a file name such as {path / 'out.png'}")
    return path


def cmd_train(args: argparse.Namespace) -> int:
    from .config import build_config

    shortcuts: dict[str, dict] = {"train": {}, "data": {}}
    for section, key, value in (("train", "minutes", args.minutes), ("train", "steps", args.steps),
                                ("data", "name", args.data), ("data", "root", args.data_root),
                                ("data", "image_size", args.image_size)):
        if value is not None:
            shortcuts[section][key] = value
    if args.resume:
        if args.preset or args.config:
            raise ConfigError("--resume takes the run's own config; drop --preset/--config (use --set to change it)")
        from .checkpoint import read_config

        shortcuts["train"].setdefault("minutes", 0.0)  # a time budget applies to one invocation, not the run
        cfg = build_config(base=read_config(args.resume), overrides=args.set, settings=shortcuts)
        out = Path(args.resume)
    else:
        cfg = build_config(args.preset, args.config, args.set, settings=shortcuts)
        out = Path(args.out or f"runs/{cfg.name}")
    from .train import train  # torch is imported only once the config is known to be valid

    train(cfg, out, resume=bool(args.resume), overwrite=args.force, progress=not args.quiet)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import contextlib

    from . import distributed
    from . import sample as S
    from .io import run_lock
    from .prompting import with_prompts

    prompts = prompts_of(args)
    if args.n is None:
        args.n = 8 * len(prompts) if prompts else 64
    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    if prompts and args.n % len(prompts):
        raise ConfigError(f"--n {args.n} does not split into {len(prompts)} prompt rows; give a multiple of "
                          f"{len(prompts)}")
    for name in ("steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    run_dir = Path(args.run)
    out = _check_out(args.out or run_dir / "samples.png")
    run = S.load_run(run_dir, weights=args.weights, device=args.device)
    run = with_prompts(run, prompts, args.text_encoder)
    check_text_guidance(run, args.guidance, args.guidance_sweep)
    _check_sampler(args.sampler)
    spacing = args.spacing or ("auto" if args.sampler else None)  # a new sampler brings its own spacing
    run = S.with_sample_settings(run, steps=args.steps, sampler=args.sampler, variance=args.variance,
                                 spacing=spacing, seed=args.seed, batch_size=args.batch_size, eta=args.eta,
                                 s_churn=args.churn, guidance=args.guidance, precision=args.precision)
    S.check_guidance(run, run.cfg.sample.guidance)
    labels = S.class_labels(run, args.klass, args.n)
    inside = out.resolve().is_relative_to(run_dir.resolve()) and distributed.is_main()
    with run_lock(run_dir) if inside else contextlib.nullcontext():  # one writer at a time in a run
        files = _sample_files(args, run, run_dir, out, labels)
    for f in files:
        print(f"wrote {f}")
    return 0


def _sample_files(args: argparse.Namespace, run, run_dir: Path, out: Path, labels) -> list[Path]:
    """The sample command's work once its inputs are checked: grids, .npz, trajectory and GIF; the files written."""
    import shutil

    from . import distributed
    from . import sample as S

    if args.guidance_sweep is not None:
        weights = _csv_floats(args.guidance_sweep)
        S.check_guidance(run, max(weights))
        files = [S.guidance_sweep(run, weights, out, per_cell=max(1, min(args.n, 8)))]
    else:
        s = run.cfg.sample
        guided = s.guidance and (run.prompts or not run.cfg.model.context_dim)
        text = f", {len(run.prompts)} prompts" if run.prompts else ""
        text = text or (", unconditional (no --prompt)" if run.cfg.model.context_dim else "")
        print(f"sampling {args.n} from {run_dir} (step {run.step}) with {s.sampler}, {s.steps} steps"
              f"{f', guidance {s.guidance:g}' if guided else ''}, seed {s.seed}{text}")
        if args.n > s.batch_size:  # batch by batch to OUT.parts/: an interrupted run resumes where it stopped
            try:
                samples, _ = S.sample_in_parts(run, args.n, out, labels, progress=True)
            except KeyboardInterrupt:
                raise RunError(f"interrupted; the finished batches are kept in {S.parts_dir(out)}: rerun the same "
                               "command to sample only the rest") from None
            files = S.write_samples(run, samples, out, labels)
            distributed.barrier()  # every process has read the parts
            if distributed.is_main():
                shutil.rmtree(S.parts_dir(out))
        else:
            samples = S.sample(run, args.n, labels=labels, progress=True)
            files = S.write_samples(run, samples, out, labels)
    if args.trajectory is not None or args.gif is not None:
        files += S.write_reverse_process(
            run,
            trajectory=None if args.trajectory is None else Path(args.trajectory or out.parent / "trajectory.png"),
            gif=None if args.gif is None else Path(args.gif or out.parent / "reverse.gif"),
            labels=labels,
        )
    return files


def cmd_forward(args: argparse.Namespace) -> int:
    from .viz import forward_figure

    out = _check_out(args.out)
    forward_figure(data=None if args.image else args.data, image=args.image, n=args.n, ts=args.t, T=args.T,
                   schedules=[s.strip() for s in args.schedule.split(",") if s.strip()],
                   image_size=args.image_size, data_root=args.data_root, seed=args.seed, out=out)
    print(f"wrote {out}")
    return 0


def _check_sampler(name: str | None) -> None:
    from .samplers import SAMPLERS

    if name is not None and name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def _edit_run(args: argparse.Namespace, sampler: str | None = None):
    """Load an image run for editing with the command's sampling overrides, and the class label to use."""
    from . import sample as S

    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    from .prompting import with_prompts

    run = S.load_run(args.run, weights=args.weights, device=args.device)
    run = with_prompts(run, prompts_of(args), args.text_encoder)
    check_text_guidance(run, args.guidance)
    run = S.with_sample_settings(run, steps=args.steps, seed=args.seed, guidance=args.guidance, sampler=sampler)
    S.check_guidance(run, run.cfg.sample.guidance)
    if not run.is_image:
        raise ConfigError(f"{run.path} models 2D points; editing needs an image run")
    labels = S.class_labels(run, args.klass, 1) if args.klass is not None else None
    return run, (None if labels is None else int(labels[0]))


def _labels(label: int | None, n: int):
    import torch

    return None if label is None else torch.full((n,), label, dtype=torch.long)


def _picture_for(run, path: str):
    from .data import load_picture

    c, h, _ = run.item_shape
    return load_picture(path, size=h, channels=c)


def cmd_edit(args: argparse.Namespace) -> int:
    import torch

    from .edit import sdedit
    from .viz import save_grid

    out = _check_out(args.out)
    _check_sampler(args.sampler)
    run, label = _edit_run(args, args.sampler)
    image = _picture_for(run, args.image)
    noised, edits = sdedit(run, image, args.strength, args.n, _labels(label, args.n))
    save_grid(torch.cat([image, noised[:1], edits]), out, nrow=args.n + 2)
    print(f"wrote {out}  (input, noised to t0 = {round(args.strength * run.schedule.T)}, then {args.n} edits)")
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    import torch

    from .edit import inpaint
    from .viz import save_grid

    out = _check_out(args.out)
    run, label = _edit_run(args)
    image = _picture_for(run, args.image)
    from .data import load_mask

    mask = load_mask(args.mask, args.image, run.item_shape[-1])
    filled = inpaint(run, image, mask, args.n, args.jump, args.resample, _labels(label, args.n))
    shown = image * (1 - mask) + mask * torch.full_like(image, 0.0)
    save_grid(torch.cat([image, shown, filled]), out, nrow=args.n + 2)
    print(f"wrote {out}  (input, masked input, then {args.n} fills)")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .edit import interpolate
    from .viz import save_grid

    out = _check_out(args.out)
    run, label = _edit_run(args)
    frames = interpolate(run, args.seed_a, args.seed_b, args.frames, label)
    save_grid(frames, out, nrow=args.frames)
    print(f"wrote {out}")
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    import io

    import numpy as np
    import torch

    from .checkpoint import atomic_write
    from .edit import invert
    from .viz import save_grid

    out = _check_out(args.out)
    run, label = _edit_run(args)
    images = torch.cat([_picture_for(run, p) for p in args.image])
    latents, recon = invert(run, images, _labels(label, len(images)))
    err = (recon - images).abs().mean().item()
    buf = io.BytesIO()
    np.savez_compressed(buf, latents=latents.numpy(), reconstructions=recon.numpy(), images=images.numpy())
    atomic_write(out, lambda f: f.write(buf.getvalue()))
    png = out.with_suffix(".png")
    save_grid(torch.cat([images, recon]), png, nrow=len(images))
    print(f"wrote {out} and {png} (top: inputs, bottom: reconstructions; mean |error| {err:.4f})")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    from .schedules import SCHEDULES, make_schedule
    from .viz import plot_schedules

    out = _check_out(args.out)
    curves = {}
    for name in SCHEDULES:
        s = make_schedule(name, args.T)
        curves[name] = (s.alpha_bar[1:].numpy(), s.log_snr[1:].numpy())
    plot_schedules(curves, args.T, out)
    print(f"wrote {out}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .config import load_preset, preset_names

    for name in preset_names():
        cfg = load_preset(name)
        print(f"{name:22s} data={cfg.data.name:14s} model={cfg.model.arch:10s} "
              f"{cfg.diffusion.schedule} T={cfg.diffusion.T:<5d} steps={cfg.train.steps}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .sample import load_run

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    _check_sampler(args.sampler)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()] if args.samplers else None
    for name in samplers or []:
        _check_sampler(name)
    sweep = _csv_floats(args.guidance_sweep) if args.guidance_sweep is not None else None
    run = load_run(args.run, weights=args.weights, device=args.device)
    if args.prompts:
        return eval_prompts(args, run, sweep)
    if args.per_prompt is not None:
        raise ConfigError("--per-prompt applies only to eval --prompts")
    r = evaluate(run, args.n, args.sampler, args.steps, guidance=args.guidance, guidance_sweep=sweep,
                 sweep_steps=args.sweep_steps, samplers=samplers, features=args.features,
                 inception_weights=args.inception_weights, seed=args.seed, batch_size=args.batch_size, progress=True)
    m, f = r["metrics"], r["floor"]
    if r["kind"] == "image":
        print(f"FID {m['fid']:.3f} (real-vs-real floor {f['fid']:.3f}), KID {m['kid']:.5f} +- {m['kid_std']:.5f} "
              f"(floor {f['kid']:.5f}), precision {m['precision']:.3f} ({f['precision']:.3f}), recall "
              f"{m['recall']:.3f} ({f['recall']:.3f}) at N = {r['n']}, features {r['features']}")
    else:
        print(f"energy distance {m['energy_distance']:.5f} (floor {f['energy_distance']:.5f}), sliced Wasserstein "
              f"{m['sliced_wasserstein']:.5f} (floor {f['sliced_wasserstein']:.5f}) at N = {r['n']}")
    if "conditional" in r:
        print(f"classifier accuracy of the samples: {r['conditional']['accuracy']:.3f}")
    print(f"sampling {r['sampling']['seconds']:.1f} s, metrics {r['metric_seconds']:.1f} s")
    for key in ("json", "markdown"):
        print(f"wrote {r['files'][key]}")
    return 0


def cmd_nll(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_nll
    from .sample import load_run

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    run = load_run(args.run, weights=args.weights, device=args.device)
    r = evaluate_nll(run, args.n, timesteps=args.timesteps, variance=args.variance, seed=args.seed,
                     batch_size=args.batch_size, progress=True)
    print(f"{r['bits_per_dim']:.4f} +- {r['stderr']:.4f} bits/dim on {r['n']} {r['images']} (L_T {r['prior_L_T']:.4f}, "
          f"sum L_t {r['diffusion_sum_L_t']:.4f}, L_0 {r['decoder_L_0']:.4f}); {r['estimator']}")
    print(f"wrote {r['file']}")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "forward": cmd_forward, "schedules": cmd_schedules,
            "presets": cmd_presets, "edit": cmd_edit, "inpaint": cmd_inpaint, "interpolate": cmd_interpolate,
            "invert": cmd_invert, "eval": cmd_eval, "nll": cmd_nll}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.formatwarning = lambda msg, cat, *a, **k: f"ddpmlab: warning: {msg}\n"  # type: ignore
            if args.command in ("train", "sample") and "WORLD_SIZE" in os.environ:  # under torchrun: join the job
                from .distributed import session

                with session(quiet_others=True):  # ranks > 0 keep stdout quiet; rank 0 reports
                    return COMMANDS[args.command](args)
            return COMMANDS[args.command](args)
    except DDPMLabError as exc:
        print(f"ddpmlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file the command had to write or read failed at run time
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ddpmlab: error: {where}{exc.strerror or exc}; check the path, its permissions and free disk space",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ddpmlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The command line's parser: one subcommand per job, with examples; argument types check ranges once."""

from __future__ import annotations

import argparse
from typing import Callable

from ..errors import ConfigError
from .text import text_options

# --spacing: "auto" and every spacing of schedules.SPACINGS (a test keeps them equal; the schedules module loads
# torch, which `ddpmlab --help` does without)
SPACING_CHOICES = ["auto", "leading", "trailing", "linspace", "quadratic", "karras", "logsnr", "logsnr-window",
                   "rho-window"]

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
  ddpmlab sample runs/mnist-cond --guidance-sweep 0,1,3,5 --out sweep.png
  ddpmlab sample runs/moons --sampler unipc-3 --steps 5 --spacing tuned   # after ddpmlab tune""",
    "tune": """examples:
  ddpmlab tune runs/moons --sampler unipc-3 --steps 5
  ddpmlab tune runs/fashion-mnist-text --sampler unipc-3 --steps 8 --prompt "a pair of trousers" --guidance 2
(writes RUN/timesteps.json; then sample with --spacing tuned and the same --sampler and --steps)""",
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
    "studio": """examples:
  ddpmlab studio runs/demo
  ddpmlab studio runs/mnist runs/mnist-cond --port 7861
  ddpmlab studio                # every run under runs/
(needs the studio extra: pip install -e .[studio]; serves http://127.0.0.1:PORT/ until Ctrl-C)""",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"ddpmlab: error: {message} (see {self.prog} --help)\n")


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def csv_floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 or v != v for v in values):
        raise ConfigError(f"guidance weights must be non-negative numbers, got {text!r}")
    return values


def _interval(text: str) -> tuple[float, ...]:
    """--guidance-interval LO,HI (noise levels sigma_t / alpha_t), or 'all' for every step."""
    if text.strip().lower() == "all":
        return ()
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two noise levels, e.g. 0.35,7) or all; got {text!r}") \
            from None
    return (lo, hi)


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

    _train_commands(command)
    _sample_commands(command)
    _tune_command(command)
    _tools_commands(command)
    _edit_commands(command)
    _eval_commands(command)
    p = command("studio", "Serve a local web page to explore runs: sample, compare, forward, guidance, edit.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run directories (default: every run under runs/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    return parser


def _train_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """train's arguments."""
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


def _sample_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """sample's arguments."""
    p = command("sample", "Generate samples from a trained run.")
    p.add_argument("run", help="run directory")
    p.add_argument("--n", type=_positive, help="number of samples (default 64; 8 per prompt with --prompt); with "
                   "--guidance-sweep, images per class and weight (default 8)")
    p.add_argument("--steps", type=_positive, help="network evaluations (default: the run's sample.steps)")
    p.add_argument("--sampler", help="sampler name (default: the run's sample.sampler)")
    text_options(p, several=True)
    p.add_argument("--variance", choices=["beta", "posterior"], help="ddpm only: sigma_t^2 = beta_t or beta-tilde_t")
    p.add_argument("--spacing", choices=[*SPACING_CHOICES, "tuned"],
                   help="timestep spacing (default: the sampler's own, see README); tuned: the run's timesteps.json, "
                   "fitted by ddpmlab tune")
    p.add_argument("--eta", type=float, help="ddim only: stochasticity (0 deterministic, 1 ancestral)")
    p.add_argument("--churn", type=float, help="heun only: stochastic churn S_churn (Karras et al. 2022)")
    p.add_argument("--class", dest="klass", metavar="C", help="conditional runs: a class index or name, or 'all' "
                   "(one row per class; the default)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight w: (1+w) eps(x,c) - w eps(x)")
    p.add_argument("--guidance-interval", type=_interval, metavar="LO,HI", help="guide only where the noise "
                   "level sigma_t/alpha_t lies in (LO, HI], or 'all' (default: the run's sample.guidance_interval)")
    p.add_argument("--guidance-sweep", metavar="W,W,...", help="write one figure: rows = classes (or prompts), "
                   "a block of --n columns per w")
    p.add_argument("--seed", type=int, help="same seed, same samples (whatever the batch size)")
    p.add_argument("--batch-size", type=_positive)
    p.add_argument("--weights", choices=["ema", "model"], default="ema", help="EMA (default) or online weights")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="network precision (default: the run's sample.precision; auto = bf16 where native)")
    p.add_argument("--out", help="PNG to write (default RUN/samples.png); an .npz is written beside it")
    p.add_argument("--trajectory", nargs="?", const="", help="also write the denoising trajectory figure")
    p.add_argument("--gif", nargs="?", const="", help="also write a GIF of the reverse process")
    p.add_argument("--device", default="auto")


def _tune_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """tune's arguments."""
    p = command("tune", "Fit the timesteps of a few-step ODE sampler to a trained run, for --spacing tuned.")
    p.add_argument("run", help="run directory")
    p.add_argument("--sampler", help="an ODE sampler: ddim, dpmpp-2m, dpmpp-3m, unipc-2, unipc-3, euler, heun "
                   "(default: the run's sample.sampler); ddim and heun are tuned as ODE solvers (eta 0, churn 0)")
    p.add_argument("--steps", type=_positive, help="sampler steps to tune, 2 to 20 (default: the run's sample.steps)")
    p.add_argument("--spacing", choices=SPACING_CHOICES, help="where the search starts (default auto)")
    p.add_argument("--samples", type=_positive, default=64, help="held-out noise draws to fit, and as many to check "
                   "the fit on, each set solved in one batch (default 64)")
    p.add_argument("--reference-steps", type=_positive, default=100, help="steps of the reference solve "
                   "(unipc-3, uniform in log-SNR; default 100, and at least 4 x --steps, at most T)")
    p.add_argument("--trials", type=_positive, default=150, help="most few-step solves the search runs (default 150)")
    text_options(p, several=True)
    p.add_argument("--guidance", type=float, help="guidance weight to tune for (default: the run's sample.guidance)")
    p.add_argument("--seed", type=int, help="seed of the held-out noise (default: the run's sample.seed)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema", help="EMA (default) or online weights")
    p.add_argument("--device", default="auto")


def _tools_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """forward, schedules and presets."""
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


def _edit_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """edit, inpaint, interpolate and invert."""
    def edit_common(p: argparse.ArgumentParser, image_required: bool = True) -> None:
        p.add_argument("run", help="run directory")
        text_options(p, several=False)
        p.add_argument("--steps", type=_positive, help="network evaluations (default: the run's sample.steps)")
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


def _eval_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """eval's and nll's arguments."""
    p = command("eval", "Score a run's samples: FID/KID/precision/recall (images) or exact 2D metrics, with floors.")
    p.add_argument("run", help="run directory")
    p.add_argument("--n", type=_positive, default=2000, help="samples to score (default 2000)")
    p.add_argument("--sampler", help="sampler name (default: the run's sample.sampler)")
    p.add_argument("--steps", type=_positive, help="network evaluations (default: the run's sample.steps)")
    p.add_argument("--spacing", choices=[*SPACING_CHOICES, "tuned"], help="timestep spacing (default: the sampler's "
                   "own); tuned: the run's timesteps.json, fitted by ddpmlab tune")
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
    p.add_argument("--batch-size", type=_positive)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--device", default="auto")

    p = command("nll", "Negative log-likelihood in bits/dim from the variational bound (Ho et al. 2020, eq. 5).")
    p.add_argument("run", help="run directory")
    p.add_argument("--n", type=_positive, default=500, help="real images to score (default 500)")
    p.add_argument("--timesteps", type=_positive, help="stratified estimate over K timesteps (default: every t, exact)")
    p.add_argument("--variance", choices=["posterior", "beta"], default="posterior",
                   help="reverse-process variance: beta-tilde_t (default) or beta_t")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive, default=250)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--device", default="auto")

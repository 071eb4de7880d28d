"""`ddpmlab train | sample | forward | schedules | presets`: parse, build a config, make one library call."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, DDPMLabError

EXAMPLES = {
    "train": """examples:
  ddpmlab train --preset mnist --out runs/mnist
  ddpmlab train --preset moons --set train.steps=3000 --out runs/moons
  ddpmlab train --preset mnist --set model.channels=64 --set train.batch_size=128 --minutes 20
  ddpmlab train --resume runs/mnist --set train.steps=8000""",
    "sample": """examples:
  ddpmlab sample runs/mnist --n 64 --seed 0 --out samples.png
  ddpmlab sample runs/mnist --steps 250 --variance beta --trajectory --gif
  ddpmlab sample runs/moons --n 2000 --out moons.png --gif""",
    "forward": """examples:
  ddpmlab forward --data mnist-5k --t 0,50,100,150,199 --T 200 --out forward.png
  ddpmlab forward --image photo.png --image-size 64 --schedule linear,cosine --out strip.png""",
    "schedules": """examples:
  ddpmlab schedules --T 1000 --out schedules.png""",
    "presets": """examples:
  ddpmlab presets""",
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
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--steps", type=int, help="network evaluations (default: the run's sample.steps)")
    p.add_argument("--sampler", help="sampler name (default: the run's sample.sampler)")
    p.add_argument("--variance", choices=["beta", "posterior"], help="DDPM sigma_t^2: beta_t or beta-tilde_t")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace", "quadratic", "karras"])
    p.add_argument("--seed", type=int, help="same seed, same samples (whatever the batch size)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--weights", choices=["ema", "model"], default="ema", help="EMA (default) or online weights")
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
    from .checkpoint import read_config
    from .config import _merge, build_config, parse_override, validate
    from .train import train

    shortcuts = [f"train.minutes={args.minutes}"] if args.minutes is not None else []
    shortcuts += [f"train.steps={args.steps}"] if args.steps is not None else []
    shortcuts += [f'data.name="{args.data}"'] if args.data else []
    shortcuts += [f'data.root="{args.data_root}"'] if args.data_root else []
    shortcuts += [f"data.image_size={args.image_size}"] if args.image_size is not None else []
    if args.resume:
        if args.preset or args.config:
            raise ConfigError("--resume takes the run's own config; drop --preset/--config (use --set to change it)")
        cfg = read_config(args.resume)
        for item in [*args.set, *shortcuts]:
            cfg = _merge(cfg, parse_override(item), "--set")
        cfg = validate(cfg)
        out = Path(args.resume)
    else:
        cfg = build_config(args.preset, args.config, [*args.set, *shortcuts])
        out = Path(args.out or f"runs/{cfg.name}")
    train(cfg, out, resume=bool(args.resume), overwrite=args.force, progress=not args.quiet)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from . import sample as S

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    for name in ("steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    run_dir = Path(args.run)
    out = _check_out(args.out or run_dir / "samples.png")
    run = S.load_run(run_dir, weights=args.weights, device=args.device)
    if args.sampler is not None:
        from .samplers import SAMPLERS

        if args.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    run = S.with_sample_settings(run, steps=args.steps, sampler=args.sampler, variance=args.variance,
                                 spacing=args.spacing, seed=args.seed, batch_size=args.batch_size)
    print(f"sampling {args.n} from {run_dir} (step {run.step}) with {run.cfg.sample.sampler}, "
          f"{run.cfg.sample.steps} steps, seed {run.cfg.sample.seed}")
    samples = S.sample(run, args.n, progress=True)
    files = S.write_samples(run, samples, out)
    if args.trajectory is not None or args.gif is not None:
        files += S.write_reverse_process(
            run,
            trajectory=None if args.trajectory is None else Path(args.trajectory or out.parent / "trajectory.png"),
            gif=None if args.gif is None else Path(args.gif or out.parent / "reverse.gif"),
        )
    for f in files:
        print(f"wrote {f}")
    return 0


def cmd_forward(args: argparse.Namespace) -> int:
    from .viz import forward_figure

    out = _check_out(args.out)
    forward_figure(data=None if args.image else args.data, image=args.image, n=args.n, ts=args.t, T=args.T,
                   schedules=[s.strip() for s in args.schedule.split(",") if s.strip()],
                   image_size=args.image_size, data_root=args.data_root, seed=args.seed, out=out)
    print(f"wrote {out}")
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


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "forward": cmd_forward, "schedules": cmd_schedules,
            "presets": cmd_presets}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.formatwarning = lambda msg, cat, *a, **k: f"ddpmlab: warning: {msg}\n"  # type: ignore
            return COMMANDS[args.command](args)
    except DDPMLabError as exc:
        print(f"ddpmlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ddpmlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

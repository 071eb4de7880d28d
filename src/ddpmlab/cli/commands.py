"""One handler per command: arguments -> a request -> one library call -> print its summary. No math, no loops.

Heavy modules are imported inside the handlers, so `ddpmlab --help` and argument mistakes answer at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .parser import csv_floats
from .text import check_text_guidance, eval_prompts, prompts_of


def check_out(path: str | Path) -> Path:
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
    from ..config import build_config

    shortcuts = _train_shortcuts(args)
    if args.resume:
        from ..checkpoint import read_config

        cfg = build_config(base=read_config(args.resume), overrides=args.set, settings=shortcuts)
    else:
        cfg = build_config(args.preset, args.config, args.set, settings=shortcuts)
    from ..train import train  # torch is imported only once the config is known to be valid

    train(cfg, Path(args.resume or args.out or f"runs/{cfg.name}"), resume=bool(args.resume), overwrite=args.force,
          progress=not args.quiet)
    return 0


def _train_shortcuts(args: argparse.Namespace) -> dict[str, dict]:
    """The train command's shortcut flags as config settings; flags that --resume cannot honour are refused."""
    if args.resume:
        given = [flag for flag, v in (("--preset", args.preset), ("--config", args.config), ("--out", args.out),
                                      ("--force", args.force or None)) if v is not None]
        if given:
            raise ConfigError(f"--resume takes the run's own config and directory; drop "
                              f"{', '.join(given)} (use --set to change a setting)")
    shortcuts: dict[str, dict] = {"train": {}, "data": {}}
    for section, key, value in (("train", "minutes", args.minutes), ("train", "steps", args.steps),
                                ("data", "name", args.data), ("data", "root", args.data_root),
                                ("data", "image_size", args.image_size)):
        if value is not None:
            shortcuts[section][key] = value
    if args.resume:
        shortcuts["train"].setdefault("minutes", 0.0)  # a time budget applies to one invocation, not the run
    return shortcuts


def cmd_sample(args: argparse.Namespace) -> int:
    from ..sample_files import describe, write_sample_set

    run = _sampling_run(args)
    request = _sample_request(args, run)
    print(describe(run, request))
    for f in write_sample_set(run, request, progress=True).files:
        print(f"wrote {f}")
    return 0


def _sampling_run(args: argparse.Namespace):
    """The run with the command's sampling settings and prompts; every setting checked by config.validate."""
    from ..prompting import with_prompts
    from ..sampling import check_guidance, load_run, requested_spacing, with_sample_settings

    run = with_prompts(load_run(args.run, weights=args.weights, device=args.device), prompts_of(args),
                       args.text_encoder)
    check_text_guidance(run, args.guidance, args.guidance_sweep)
    run = with_sample_settings(run, steps=args.steps, sampler=args.sampler, variance=args.variance,
                               spacing=requested_spacing(args.sampler, args.spacing),
                               seed=args.seed, batch_size=args.batch_size, eta=args.eta, s_churn=args.churn,
                               guidance=args.guidance, guidance_interval=args.guidance_interval,
                               precision=args.precision)
    check_guidance(run, run.cfg.sample.guidance)
    return run


def _sample_request(args: argparse.Namespace, run):
    """What to write: n samples (or a guidance sweep of n per cell), their labels, and the figure paths."""
    from ..sample_files import SampleRequest
    from ..sampling import check_guidance, class_labels

    out = check_out(args.out or Path(args.run) / "samples.png")
    sweep = tuple(csv_floats(args.guidance_sweep)) if args.guidance_sweep is not None else ()
    if sweep and args.klass is not None:
        raise ConfigError("--guidance-sweep draws a row for every class; drop --class")
    for w in sweep:
        check_guidance(run, w)
    n = args.n or (8 if sweep else 8 * len(run.prompts) if run.prompts else 64)
    if run.prompts and not sweep and n % len(run.prompts):
        raise ConfigError(f"--n {n} does not split into {len(run.prompts)} prompt rows; give a multiple of "
                          f"{len(run.prompts)}")
    figure = {k: None if v is None else Path(v or out.parent / name)
              for k, v, name in (("trajectory", args.trajectory, "trajectory.png"), ("gif", args.gif, "reverse.gif"))}
    return SampleRequest(n, out, None if sweep else class_labels(run, args.klass, n), sweep, **figure)


def cmd_tune(args: argparse.Namespace) -> int:
    from ..prompting import with_prompts
    from ..samplers import SAMPLERS
    from ..samplers.tuning import REFERENCE_SAMPLER, reference_steps_for
    from ..sampling import check_tunable, load_run, save_tuned, start_spacing, tune, with_sample_settings

    run = with_prompts(load_run(args.run, weights=args.weights, device=args.device), prompts_of(args),
                       args.text_encoder)
    check_text_guidance(run, args.guidance)
    sampler = args.sampler or run.cfg.sample.sampler
    ode = {k: 0.0 for k in ("eta", "s_churn") if sampler in SAMPLERS and k in SAMPLERS[sampler].options}
    spacing = args.spacing or "auto"
    run = with_sample_settings(run, sampler=sampler, steps=args.steps, spacing=spacing, guidance=args.guidance,
                               seed=args.seed, **ode)
    check_tunable(run)
    s = run.cfg.sample
    start = start_spacing(run)
    print(f"tuning {s.sampler} at {s.steps} steps from {start} on {run.path} (step {run.step}): {args.samples} "
          f"held-out draws to fit and {args.samples} to check, at most {args.trials} solves")
    r = tune(run, samples=args.samples, reference_steps=args.reference_steps, max_trials=args.trials, progress=True)
    path = save_tuned(run, r, samples=args.samples, reference_steps=args.reference_steps)
    reference = reference_steps_for(len(r.start), args.reference_steps, run.schedule.T)
    print(f"error against the reference ({REFERENCE_SAMPLER}, {reference} steps): {r.error_start:.4g} -> "
          f"{r.error:.4g} on the {args.samples} draws fitted ({r.trials} solves), {r.check_start:.4g} -> {r.check:.4g} "
          f"(x{r.check / r.check_start if r.check_start > 0 else 1.0:.2f}) on {args.samples} others")
    if r.timesteps == r.start:
        print(f"no fit did better on the other draws than the start: {start} is kept")
    print(f"timesteps {' '.join(map(str, r.timesteps))} (start {' '.join(map(str, r.start))})")
    print(f"wrote {path}; sample with: ddpmlab sample {run.path} --sampler {s.sampler} --steps {s.steps} "
          "--spacing tuned")
    if run.is_image:  # README, "Tuned timesteps": on fashion-mnist-text closer to the ODE was not better-looking
        print(f"closer to the network's ODE solution is not always better-looking images: compare `ddpmlab eval "
              f"{run.path} --sampler {s.sampler} --steps {s.steps} --spacing tuned` with --spacing auto first")
    return 0


def cmd_forward(args: argparse.Namespace) -> int:
    from ..viz import forward_figure

    out = check_out(args.out)
    forward_figure(data=None if args.image else args.data, image=args.image, n=args.n, ts=args.t, T=args.T,
                   schedules=[s.strip() for s in args.schedule.split(",") if s.strip()],
                   image_size=args.image_size, data_root=args.data_root, seed=args.seed, out=out)
    print(f"wrote {out}")
    return 0


def _edit_run(args: argparse.Namespace, sampler: str | None = None):
    """An image run for editing with the command's sampling overrides, and the class label to use (or None)."""
    from ..prompting import with_prompts
    from ..sampling import check_guidance, class_labels, load_run, with_sample_settings

    run = with_prompts(load_run(args.run, weights=args.weights, device=args.device), prompts_of(args),
                       args.text_encoder)
    check_text_guidance(run, args.guidance)
    run = with_sample_settings(run, steps=args.steps, seed=args.seed, guidance=args.guidance, sampler=sampler)
    check_guidance(run, run.cfg.sample.guidance)
    labels = class_labels(run, args.klass, 1) if args.klass is not None else None
    return run, (None if labels is None else int(labels[0]))


def cmd_edit(args: argparse.Namespace) -> int:
    from ..edit import write_sdedit

    out = check_out(args.out)
    run, label = _edit_run(args, args.sampler)
    print(write_sdedit(run, args.image, args.strength, args.n, label, out))
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    from ..edit import write_inpaint

    out = check_out(args.out)
    run, label = _edit_run(args)
    print(write_inpaint(run, args.image, args.mask, args.n, args.jump, args.resample, label, out))
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ..edit import write_interpolation

    out = check_out(args.out)
    run, label = _edit_run(args)
    print(write_interpolation(run, args.seed_a, args.seed_b, args.frames, label, out))
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    from ..edit import write_inversion

    out = check_out(args.out)
    run, label = _edit_run(args)
    print(write_inversion(run, args.image, label, out))
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    from ..viz import schedules_figure

    out = check_out(args.out)
    schedules_figure(args.T, out)
    print(f"wrote {out}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from ..config import load_preset, preset_names

    for name in preset_names():
        cfg = load_preset(name)
        print(f"{name:22s} data={cfg.data.name:14s} model={cfg.model.arch:10s} "
              f"{cfg.diffusion.schedule} T={cfg.diffusion.T:<5d} steps={cfg.train.steps}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate
    from ..sampling import load_run

    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()] if args.samplers else None
    sweep = csv_floats(args.guidance_sweep) if args.guidance_sweep is not None else None
    run = load_run(args.run, weights=args.weights, device=args.device)
    if args.prompts:
        return eval_prompts(args, run, sweep)
    if args.per_prompt is not None:
        raise ConfigError("--per-prompt applies only to eval --prompts")
    r = evaluate(run, args.n, args.sampler, args.steps, guidance=args.guidance, guidance_sweep=sweep,
                 sweep_steps=args.sweep_steps, samplers=samplers, features=args.features,
                 inception_weights=args.inception_weights, seed=args.seed, batch_size=args.batch_size,
                 spacing=args.spacing, progress=True)
    print("\n".join(r.summary_lines()))
    return 0


def cmd_nll(args: argparse.Namespace) -> int:
    from ..likelihood import evaluate_nll
    from ..sampling import load_run

    run = load_run(args.run, weights=args.weights, device=args.device)
    r = evaluate_nll(run, args.n, timesteps=args.timesteps, variance=args.variance, seed=args.seed,
                     batch_size=args.batch_size, progress=True)
    print(r.summary())
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    from ..studio import serve  # Gradio is imported only here; a one-line error names the extra when it is missing

    return serve(args.runs, host=args.host, port=args.port)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "tune": cmd_tune, "forward": cmd_forward,
            "schedules": cmd_schedules, "presets": cmd_presets, "edit": cmd_edit, "inpaint": cmd_inpaint,
            "interpolate": cmd_interpolate, "invert": cmd_invert, "eval": cmd_eval, "nll": cmd_nll,
            "studio": cmd_studio}

"""The command line's text-conditioning options: --prompt, --prompts-file, --text-encoder, eval --prompts."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError


def text_options(p: argparse.ArgumentParser, several: bool) -> None:
    """--prompt (and, for sampling, --prompts-file) and --text-encoder: text-conditional runs only."""
    if several:
        p.add_argument("--prompt", action="append", metavar="TEXT",
                       help="text runs: a prompt, one grid row each (repeat for several)")
        p.add_argument("--prompts-file", metavar="FILE", help="text runs: prompts, one per line")
    else:
        p.add_argument("--prompt", metavar="TEXT", help="text runs: the prompt to steer the edit towards")
    p.add_argument("--text-encoder", metavar="DIR", help="text runs: a sentence encoder directory instead of the "
                   "run's own (same width)")


def prompts_of(args: argparse.Namespace) -> list[str] | None:
    """The prompts of --prompt and --prompts-file, in that order; None when neither is given."""
    from ..prompting import read_prompts_file

    given = args.prompt if isinstance(args.prompt, list) else ([] if args.prompt is None else [args.prompt])
    given = given + (read_prompts_file(args.prompts_file) if getattr(args, "prompts_file", None) else [])
    return given if given or args.prompt is not None else None


def check_text_guidance(run, *given: object) -> None:
    """On a text run, guidance needs prompts to guide towards (without them the samples are unconditional)."""
    if run.cfg.model.context_dim and not run.prompts and any(g is not None for g in given):
        raise ConfigError(f"--guidance on the text run {run.path} needs a prompt to guide towards; add --prompt TEXT")


def eval_prompts(args: argparse.Namespace, run, sweep: list[float] | None) -> int:
    """eval --prompts: alignment per guidance weight, written to RUN/alignment.json."""
    import json

    from ..io import atomic_write
    from ..metrics.alignment import alignment, format_alignment
    from ..sampling import requested_spacing, with_sample_settings

    unused = [f"--{k.replace('_', '-')}" for k in ("sweep_steps", "samplers", "inception_weights", "batch_size")
              if getattr(args, k) is not None] + (["--features"] if args.features != "auto" else [])
    if unused or args.n != 2000:
        raise ConfigError(f"{', '.join(unused) or '--n'} does not apply to eval --prompts (use --per-prompt)")
    run = with_sample_settings(run, sampler=args.sampler, steps=args.steps, seed=args.seed,
                               spacing=requested_spacing(args.sampler, args.spacing))
    r = alignment(run, sweep or [args.guidance if args.guidance is not None else run.cfg.sample.guidance],
                  args.per_prompt or 8)
    out = Path(args.run) / "alignment.json"
    atomic_write(out, lambda f: f.write(json.dumps(r, indent=2).encode()))
    print("\n".join(format_alignment(r)))
    print(f"wrote {out}")
    return 0

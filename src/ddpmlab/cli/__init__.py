"""`ddpmlab train | sample | tune | edit | inpaint | interpolate | invert | eval | nll | forward | schedules | presets`.

main() parses, runs one handler (cli/commands.py) and turns a user mistake into one line on stderr and a non-zero
exit. The library names config fields in its messages (`sample.steps must be positive`); FLAGS maps them to the
flags of the sampling commands here.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from typing import Sequence

from ..errors import DDPMLabError
from .parser import build_parser

# name in a library message -> (the flag that sets it, whether the name is a config field for --set)
FLAGS: dict[str, tuple[str, bool]] = {
    "sample.n": ("--n", False), "sample.steps": ("--steps", True), "sample.sampler": ("--sampler", True),
    "sample.spacing": ("--spacing", True), "sample.eta": ("--eta", True), "sample.s_churn": ("--churn", True),
    "sample.variance": ("--variance", True), "sample.guidance": ("--guidance", True),
    "sample.guidance_interval": ("--guidance-interval", True),
    "sample.seed": ("--seed", True), "sample.batch_size": ("--batch-size", True),
    "sample.precision": ("--precision", True),
}


def flag_message(message: str, command: str) -> str:
    """The library's message with its config fields named by this command's flags (train keeps the field names,
    which is what --set takes): `sample.eta` -> `sample.eta (--eta)`, `sample.n` -> `--n`."""
    if command == "train":
        return message
    for field, (flag, is_field) in FLAGS.items():
        message = re.sub(rf"(?<![\w.-]){re.escape(field)}(?!\w)", f"{field} ({flag})" if is_field else flag, message)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    from .commands import COMMANDS

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage mistake (argparse printed its one line) or --help
        return exc.code if isinstance(exc.code, int) else 2
    formatwarning = warnings.formatwarning  # catch_warnings restores the filters, not this: put it back in finally
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.formatwarning = lambda msg, cat, *a, **k: f"ddpmlab: warning: {msg}\n"  # type: ignore
            if args.command in ("train", "sample") and "WORLD_SIZE" in os.environ:  # under torchrun: join the job
                from ..distributed import session

                with session(quiet_others=True):  # ranks > 0 keep stdout quiet; rank 0 reports
                    return COMMANDS[args.command](args)
            return COMMANDS[args.command](args)
    except DDPMLabError as exc:
        print(f"ddpmlab: error: {flag_message(str(exc), args.command)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file the command had to write or read failed at run time
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ddpmlab: error: {where}{exc.strerror or exc}; check the path, its permissions and free disk space",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ddpmlab: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


__all__ = ["FLAGS", "build_parser", "flag_message", "main"]

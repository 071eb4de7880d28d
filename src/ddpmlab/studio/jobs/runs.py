"""The runs the studio offers: finding them, their facts for laying out the page, and their loaded networks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from ...errors import ConfigError, RunError


def find_runs(paths: Sequence[str], root: str | Path = "runs") -> tuple[list[Path], list[str]]:
    """The run directories to offer (paths named, else every run under root), and one line per path refused."""
    from ... import checkpoint as ckpt

    found, notes = [], []
    if not paths:
        base = Path(root)
        candidates = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        return [p for p in candidates if ckpt.is_run(p)], notes
    for text in paths:
        path = Path(text)
        try:
            ckpt.read_config(path)
        except RunError as exc:
            notes.append(f"skipped {text}: {exc}")
            continue
        except ConfigError as exc:
            notes.append(f"skipped {text}: its config.toml is invalid ({exc})")
            continue
        if path.resolve() not in [p.resolve() for p in found]:
            found.append(path)
    return found, notes


@dataclass(frozen=True)
class RunFacts:
    """What the page needs to lay out its controls for a run, read without loading the network."""

    path: Path
    is_image: bool
    item_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    conditional: bool  # class labels
    text: bool  # prompts
    sampler: str
    steps: int
    spacing: str
    seed: int
    guidance: float
    T: int
    schedule: str
    dataset: str
    checkpoints: tuple[int, ...]  # snapshot steps, oldest first
    batch_size: int


def run_facts(path: str | Path) -> RunFacts:
    """A run's RunFacts, from its config.toml, meta.json and snapshot folders."""
    from ... import checkpoint as ckpt

    path = Path(path)
    cfg = ckpt.read_config(path)
    meta = ckpt.read_meta(path)
    s = cfg.sample
    return RunFacts(path, len(meta["item_shape"]) == 3, meta["item_shape"], meta["class_names"],
                    bool(cfg.model.num_classes) and not cfg.model.context_dim, bool(cfg.model.context_dim),
                    s.sampler, s.steps, s.spacing, s.seed, s.guidance, cfg.diffusion.T, cfg.diffusion.schedule,
                    cfg.data.name, checkpoint_steps(path), s.batch_size)


def checkpoint_steps(path: Path) -> tuple[int, ...]:
    """The training steps of a run's snapshots (checkpoints/step_N/), oldest first."""
    from ... import checkpoint as ckpt

    return tuple(int(folder.name.split("_", 1)[1]) for folder in ckpt.snapshots(path))


@lru_cache(maxsize=4)
def _loaded(path: str, step: int | None, stamp: float):
    """The run with the network of snapshot `step` (None: the newest); stamp makes a retrained run reload."""
    import copy

    from ... import checkpoint as ckpt
    from ...sampling import load_run

    run = load_run(path)
    if step is None or step == run.step:
        return run
    folder = Path(path) / ckpt.CHECKPOINTS / f"step_{step:09d}"
    if not folder.is_dir():
        raise RunError(f"{path} has no checkpoint at step {step}; pick one of its checkpoints")
    model = copy.deepcopy(run.model)
    got = ckpt.load_weights(folder / ckpt.EMA, model)
    return dataclasses.replace(run, model=model.eval(), step=got)


def open_run(path: str | Path, step: int | None = None):
    """The LoadedRun for a run directory (cached); a RunError names what is missing."""
    from ... import checkpoint as ckpt

    ckpt.read_config(path)  # the one-line error for a path that is not (or no longer) a run
    stamp = max((Path(path) / f).stat().st_mtime for f in (ckpt.CONFIG, ckpt.EMA) if (Path(path) / f).exists())
    return _loaded(str(path), step, stamp)


def sampler_names() -> list[str]:
    """The samplers the page offers: every registered one."""
    from ...samplers import SAMPLERS

    return list(SAMPLERS)


def spacing_names() -> list[str]:
    """The timestep spacings the page offers: "auto" (the sampler's own), every registered one, and "tuned" (the
    run's timesteps.json from `ddpmlab tune`; a run without an entry for the sampler and steps says so)."""
    from ...schedules import SPACINGS

    return ["auto", *SPACINGS, "tuned"]

"""The run directory: weights in safetensors, config in TOML, optimizer/RNG state via weights_only loading.

runs/NAME/
    config.toml          the run's full configuration (single source of truth)
    meta.json            the data the run was trained on: item shape, class names (and cluster sizes)
    clusters.safetensors a data.clusters run's cluster label per training item
    model.safetensors    online weights            ema.safetensors   EMA weights
    state.pt             optimizer, step, RNG states (torch.load(weights_only=True) only)
    checkpoints/step_N/  the newest complete checkpoint(s); the three files above are hard links to it
    metrics.csv          step, loss, lr, images/s, elapsed seconds
    samples/             grids written during training
Every write goes to a temporary file that is fsynced and then renamed over the target.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, from_toml_text, to_toml
from .errors import RunError
from .io import atomic_write, fsync_dir

CONFIG, MODEL, EMA, STATE, METRICS = "config.toml", "model.safetensors", "ema.safetensors", "state.pt", "metrics.csv"
META = "meta.json"  # what the weights were trained on: item shape, class names, dataset
CHECKPOINTS = "checkpoints"  # complete snapshots, checkpoints/step_N/{model,ema}.safetensors + state.pt
GUIDE = "guide.safetensors"  # an early EMA kept for autoguidance (train.guide_at)
CLUSTERS = "clusters.safetensors"  # the training items' cluster labels of a data.clusters run (clusters.py)
TUNED = "timesteps.json"  # timesteps fitted to the network by `ddpmlab tune` (sampling.save_tuned)


def _save_weights(path: Path, module: nn.Module, step: int) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    blob = save(tensors, metadata={"step": str(step), "format": "pt"})
    atomic_write(path, lambda f: f.write(blob))


def save_checkpoint(
    run_dir: Path, model: nn.Module, ema: nn.Module, state: dict[str, Any], step: int, keep: int = 1
) -> Path:
    """Write a complete checkpoint as checkpoints/step_N/, then point the run's top-level files at it.

    The snapshot is written in a temporary folder and renamed into place only once all three files
    are on disk, so a crash at any moment leaves at least one complete snapshot. The top-level
    model/ema/state files are hard links to the newest snapshot (no extra disk space). Older
    snapshots beyond `keep` are deleted only after the new one is complete.
    """
    run_dir = Path(run_dir)
    root = run_dir / CHECKPOINTS
    root.mkdir(exist_ok=True)
    final = root / f"step_{step:09d}"
    tmp = root / f".tmp_step_{step:09d}"
    for stale in root.glob(".tmp_step_*"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        _save_weights(tmp / MODEL, model, step)
        _save_weights(tmp / EMA, ema, step)
        atomic_write(tmp / STATE, lambda f: torch.save({**state, "step": step}, f))
        if final.exists():  # the same step saved twice (e.g. a stop right after a periodic save)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    for name in (MODEL, EMA, STATE):  # top level: atomic replace by a hard link to the snapshot's file
        link = run_dir / f".{name}.link"
        link.unlink(missing_ok=True)
        os.link(final / name, link)
        os.replace(link, run_dir / name)
    fsync_dir(run_dir)
    for old in snapshots(run_dir)[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_guide(run_dir: Path, ema: nn.Module, step: int) -> None:
    """Keep the EMA weights of this step as the run's autoguidance guide (written atomically)."""
    _save_weights(Path(run_dir) / GUIDE, ema, step)


def clear_weights(run_dir: Path) -> None:
    """Remove a run's weights, snapshots, guide and tuned timesteps before it is trained again from scratch
    (--force), so that nothing of the old run can be loaded as the new one's."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    for name in (MODEL, EMA, STATE, GUIDE, CLUSTERS, TUNED):
        (run_dir / name).unlink(missing_ok=True)
    fsync_dir(run_dir)


def save_clusters(run_dir: Path, labels: torch.Tensor) -> None:
    """The cluster label of every training item (data.clusters), so that a resumed run trains on the same ones."""
    from safetensors.torch import save

    blob = save({"labels": labels.detach().to("cpu", torch.int64).contiguous()})
    atomic_write(Path(run_dir) / CLUSTERS, lambda f: f.write(blob))


def load_clusters(run_dir: Path) -> torch.Tensor | None:
    """The saved cluster labels of a run (None when it has none)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / CLUSTERS
    if not path.is_file():
        return None
    try:
        return load_file(str(path))["labels"]
    except (SafetensorError, KeyError, OSError) as exc:
        raise RunError(f"{path} is damaged ({exc}); start the run again with --force") from None


def snapshots(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_checkpoint(run_dir: Path) -> Path:
    """The folder holding the newest complete checkpoint (falls back to the run directory itself)."""
    found = snapshots(run_dir)
    return found[-1] if found else Path(run_dir)


def write_config(run_dir: Path, cfg: Config) -> None:
    text = to_toml(cfg).encode()
    atomic_write(Path(run_dir) / CONFIG, lambda f: f.write(text))


def is_run(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def read_config(run_dir: str | Path) -> Config:
    """The config saved in a run directory; a clear error if path is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"run directory {run_dir} does not exist; train one with `ddpmlab train --out {run_dir}`")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory")
    if not is_run(run_dir):
        raise RunError(f"{run_dir} is not a ddpmlab run (no {CONFIG}); point to a directory made by `ddpmlab train`")
    return from_toml_text((run_dir / CONFIG).read_text(), str(run_dir / CONFIG))


def load_weights(path: Path, module: nn.Module) -> int:
    """Load safetensors weights into module; returns the step stored with them."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise RunError(f"{path} is missing; the run has no saved weights yet (train it first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"{path} is not a readable safetensors file ({exc}); it may be truncated") from None
    check_state_dict(path, module, tensors)
    module.load_state_dict(tensors)
    return int(meta.get("step", 0))


def check_state_dict(path: Path, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Name the keys where saved weights and the configured model disagree."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: saved {tuple(tensors[k].shape)}, "
                         f"config {tuple(expected[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise RunError(f"{path} does not match the run's config: {'; '.join(parts)}; "
                       "the config was changed after training (model.* or data.image_size)")


def load_state(folder: Path) -> dict[str, Any]:
    """state.pt of a run or snapshot folder through torch.load(weights_only=True): tensors and containers only."""
    path = Path(folder) / STATE
    if not path.is_file():
        raise RunError(f"{path} is missing; cannot resume (sampling needs only the weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path} was refused by the safe loader ({first[:200]}); it is not a ddpmlab state file") from None
    if not isinstance(state, dict) or "step" not in state:
        raise RunError(f"{path} is not a ddpmlab state file (no step); it belongs to another program")
    return state


def write_meta(run_dir: Path, item_shape: tuple[int, ...], class_names: tuple[str, ...], dataset: str,
               extra: dict[str, Any] | None = None) -> None:
    """meta.json: item shape, class names, dataset name, and `extra` (a text run's encoder identity)."""
    blob = json.dumps({"item_shape": list(item_shape), "class_names": list(class_names), "dataset": dataset,
                       **(extra or {})}, indent=2).encode()
    atomic_write(Path(run_dir) / META, lambda f: f.write(blob))


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / META
    if not path.is_file():
        raise RunError(f"{run_dir} has no {META}; the run has not been trained yet")
    try:
        meta = json.loads(path.read_text())
        meta["item_shape"] = tuple(int(v) for v in meta["item_shape"])
        meta["class_names"] = tuple(str(v) for v in meta.get("class_names", ()))
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path} is damaged ({exc}); retrain or restore it") from None
    return meta

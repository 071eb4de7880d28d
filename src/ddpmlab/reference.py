"""The real data an evaluation compares against: the reference set (the test split, or a disjoint half), N other
real images for the real-vs-real floor, and an on-disk cache of their features keyed by dataset and feature network.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .config import DataConfig
from .io import atomic_write

HELD_OUT_SPLIT = {"mnist", "fashion-mnist", "cifar10"}  # datasets with a real test split
SUBSET_SEED = 0  # which real images form the reference and floor sets: fixed, so caches stay valid
CACHE_VERSION = "v1"


def default_cache_dir() -> Path:
    """$DDPMLAB_CACHE, else $XDG_CACHE_HOME/ddpmlab, else ~/.cache/ddpmlab; reference statistics go in eval/."""
    if os.environ.get("DDPMLAB_CACHE"):
        return Path(os.environ["DDPMLAB_CACHE"]) / "eval"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ddpmlab" / "eval"


@dataclass(frozen=True)
class RealSets:
    """Real images for one dataset: reference (held out) and floor (N other real images), each with a note."""

    reference: torch.Tensor
    reference_labels: torch.Tensor | None
    floor: torch.Tensor
    reference_note: str
    floor_note: str


def real_sets(data: DataConfig, n: int) -> RealSets:
    """The reference set (the test split, or the odd-indexed half) and N disjoint real images for the floor.

    n = 0 gives just the reference (the training split of a dataset with a test split is then not loaded).
    """
    from .data import load_dataset

    gen = torch.Generator().manual_seed(SUBSET_SEED)
    if data.name in HELD_OUT_SPLIT:
        test = load_dataset(data, "test")
        train = load_dataset(data, "train").x if n else test.x[:0]
        pick = torch.randperm(len(train), generator=gen)[:n]
        return RealSets(test.x, test.y, train[pick], f"reference: the {len(test.x)} images of the test split",
                        f"floor: {len(pick)} random training images")
    full = load_dataset(data, "train")
    ref_idx, pool_idx = torch.arange(1, len(full.x), 2), torch.arange(0, len(full.x), 2)
    pick = pool_idx[torch.randperm(len(pool_idx), generator=gen)[:n]]
    ref_note = (f"{data.name} has no test split: reference = the {len(ref_idx)} odd-indexed images (the model "
                "trained on them too)")
    floor_note = f"floor: {len(pick)} of the {len(pool_idx)} even-indexed images (a disjoint half)"
    if len(pick) < n:
        floor_note += f"; fewer real images than N = {n}, so the floor is biased upwards"
    return RealSets(full.x[ref_idx], None if full.y is None else full.y[ref_idx], full.x[pick], ref_note, floor_note)


def cached(key: str, compute: Callable[[], tuple[dict[str, torch.Tensor], str]], cache_dir: Path | None,
           log: Callable[[str], None]) -> tuple[dict[str, torch.Tensor], str]:
    """compute() -> (tensors, note), read from cache_dir/key.safetensors if present, else computed and written atomically."""
    from safetensors import safe_open
    from safetensors.torch import save

    path = None if cache_dir is None else cache_dir / f"{key}.safetensors"
    if path is not None and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {}).get("note", "")
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    tensors, note = compute()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"key": key, "note": note})
            atomic_write(path, lambda f: f.write(blob))
            log(f"cached reference features in {path}")
        except OSError as exc:
            warnings.warn(f"could not cache reference features in {path} ({exc.strerror or exc}); continuing")
    return tensors, note

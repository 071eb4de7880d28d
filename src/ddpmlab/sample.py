"""Deprecated module: the sampling job is `ddpmlab.sampling` (Run, generate, labels) and writing sample sets is
`ddpmlab.sample_files`. The old names still work for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    **dict.fromkeys(("LoadedRun", "load_run", "with_sample_settings", "class_labels", "check_guidance", "sample",
                     "record_trajectory"), "sampling"),
    **dict.fromkeys(("save_npz", "GRID_MOST", "parts_dir", "sample_in_parts", "write_samples",
                     "write_reverse_process", "guidance_sweep"), "sample_files"),
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"ddpmlab.sample.{name} is now ddpmlab.{_MOVED[name]}.{name}; the old name will be removed "
                      "in the next release", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f"ddpmlab.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'ddpmlab.sample' has no attribute {name!r}")

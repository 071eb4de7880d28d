"""ddpmlab: denoising diffusion models you can read next to the equations, train and sample on a CPU.

The public API is imported lazily, so `import ddpmlab` stays fast:

    from ddpmlab import make_schedule, q_sample, build_config, train, load_run, sample
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Schedule": "schedules", "make_schedule": "schedules", "spaced_timesteps": "schedules",
    "q_sample": "diffusion", "q_posterior": "diffusion", "training_loss": "diffusion",
    "make_denoiser": "diffusion", "split_prediction": "diffusion",
    "Config": "config", "build_config": "config", "load_preset": "config", "preset_names": "config",
    "load_dataset": "data", "dataset_names": "data",
    "UNet": "models", "UNetConfig": "models", "MLP": "models", "build_model": "models",
    "SAMPLERS": "samplers", "sample_ddpm": "samplers",
    "train": "train", "TrainResult": "train",
    "Run": "sampling", "load_run": "sampling", "sample": "sampling", "generate": "sampling",
    "record_trajectory": "sampling", "default_labels": "sampling", "run_labels": "sampling",
    "SampleRequest": "sample_files", "write_sample_set": "sample_files",
    "DDPMLabError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        # Importing the submodule bound its name here (ddpmlab.train is also the module): bind the export instead,
        # so that `from ddpmlab import train` is the function, as documented.
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ddpmlab' has no attribute {name!r}")

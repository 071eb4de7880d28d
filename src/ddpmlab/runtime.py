"""Where and in what precision the network runs: device auto-detection, bf16 autocast, the CPU allocator."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA GPU is visible; use --set train.device=auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device=mps but MPS is not available; use --set train.device=auto")
    return device


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """Resolve train.precision: 'auto' uses bf16 where the hardware runs it natively."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


def autocast(enabled: bool, device: torch.device):
    """bf16 autocast for the network's forward pass; weights and math outside it stay fp32."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# glibc mallopt parameters (malloc.h) and the values keep_freed_memory sets
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4
MALLOC_KEEP = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 << 20))


def mallopt(settings: tuple[tuple[int, int], ...]) -> bool:
    """Apply (parameter, value) pairs with glibc's mallopt; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl and others have no such tunables
    except (OSError, AttributeError):
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the OS after every step.

    A training step or a batch of sampling allocates and frees the same large activation tensors again and
    again. Under glibc's defaults, blocks over 32 MiB are mapped fresh for every allocation, and the heap's free
    top goes back to the OS, so the kernel must fault in and zero the same memory again at the next step:
    100,000-270,000 page faults per forward pass of a 2.7M-parameter U-Net at batch 256, a sixth to a third of
    its time on a 2-core CPU (benchmarks/RESULTS.md, levers). Here every block comes from the heap and the heap
    keeps its free memory, so the process's resident memory stays at its peak instead of shrinking between steps.
    Called by training and sampling on the CPU; does nothing with other C libraries or when
    DDPMLAB_MALLOC_TUNING=0. True when the settings took effect.
    """
    if os.environ.get("DDPMLAB_MALLOC_TUNING", "1") == "0":
        return False
    return mallopt(MALLOC_KEEP)


class StopFlag:
    """Turns SIGTERM and SIGINT into a graceful stop at the end of the current step (a second Ctrl-C interrupts).

    A flag rather than an exception, so that all processes of a torchrun job can agree on the step to stop at.
    """

    def __init__(self) -> None:
        self.stop: str = ""  # the name of the signal that asked for the stop
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.stop == "SIGINT":
            raise KeyboardInterrupt
        self.stop = signal.Signals(signum).name

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

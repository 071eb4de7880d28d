"""Shared by the benchmarks: the machine, matched ddpmlab / diffusers U-Nets, timing and peak FLOP/s."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).parent / "results"

# The architecture both libraries build for the side-by-side runs: diffusers' UNet2DModel with block_out_channels
# (32, 64, 128), one layer per block, attention at 8x8 (and in the middle), 32x32 single-channel images.
WIDTHS = (32, 64, 128)
SIZE = 32
HEAD_DIM = 8  # diffusers' default attention_head_dim; ddpmlab gets the same number of heads


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__}


def ddpmlab_unet(num_classes: int = 0) -> torch.nn.Module:
    from ddpmlab.models.unet import UNet, UNetConfig

    return UNet(UNetConfig(in_channels=1, image_size=SIZE, channels=WIDTHS[0],
                           channel_mults=tuple(w // WIDTHS[0] for w in WIDTHS), num_res_blocks=1,
                           attention_resolutions=(SIZE // 4,), heads=WIDTHS[-1] // HEAD_DIM, num_classes=num_classes))


def diffusers_unet(num_classes: int = 0) -> torch.nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=SIZE, in_channels=1, out_channels=1, block_out_channels=WIDTHS,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=HEAD_DIM,
                       num_class_embeds=num_classes + 1 if num_classes else None)


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def median_seconds(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def peaks(repeats: int = 5) -> dict[str, float]:
    """This CPU's GFLOP/s through torch: 3x3 convolutions (the U-Net's shapes) and a large matmul, fp32 and bf16.

    The best of a few shapes, each the median of `repeats` timings.
    """
    out = {}
    convs = [(128, 32, 32, 32), (128, 64, 16, 16), (128, 128, 8, 8)]  # (batch, channels, H, W) of the U-Net
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        best = 0.0
        for b, c, h, w in convs:
            conv = torch.nn.Conv2d(c, c, 3, padding=1).to(dtype)
            x = torch.randn(b, c, h, w, dtype=dtype)
            with torch.no_grad():
                for _ in range(2):
                    conv(x)
                s = median(median_seconds(lambda: conv(x), repeats))
            best = max(best, 2 * b * c * c * 9 * h * w / s / 1e9)
        out[f"conv3x3_{name}_gflops"] = best
        a, bm = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ bm
        s = median(median_seconds(lambda: a @ bm, repeats))
        out[f"matmul_{name}_gflops"] = 2 * 2048 ** 3 / s / 1e9
    return out


def allocator(keep_freed: bool) -> None:
    """Before each side's turn: ddpmlab's allocator setting (runtime.keep_freed_memory, which its training and
    sampling apply on the CPU) or glibc's defaults, under which diffusers runs as its users run it."""
    from ddpmlab.runtime import M_MMAP_MAX, M_MMAP_THRESHOLD, M_TOP_PAD, M_TRIM_THRESHOLD, MALLOC_KEEP, mallopt

    # glibc's own steady state: mmap allowed (65,536 maps), its dynamic mmap and trim thresholds risen with the
    # largest freed block to their limits of 32 MiB and 64 MiB (set here from the start, which if anything spares
    # the side that runs with it some page faults).
    glibc = ((M_MMAP_MAX, 65536), (M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 64 << 20), (M_TOP_PAD, 128 << 10))
    mallopt(MALLOC_KEEP if keep_freed else glibc)

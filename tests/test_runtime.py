"""The CPU allocator setting that training and sampling apply (runtime.keep_freed_memory)."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter: the setting is process-wide and page faults are counted per process.
PROBE = textwrap.dedent("""
    import resource, torch
    from ddpmlab.runtime import keep_freed_memory

    def faults():
        # what a training step does to memory: allocate, fill and free large activations, again and again
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            a = torch.ones(12 << 20)  # 48 MiB: glibc maps blocks over 32 MiB fresh each time by default
            b = torch.ones(5 << 20)  # 20 MiB
            del a, b
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

    faults()
    before = faults()
    kept = keep_freed_memory()
    faults()
    print(kept, before, faults())
""")

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tunables exist in glibc only")


def probe(**env: str) -> tuple[bool, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@glibc_only
def test_keep_freed_memory_stops_the_page_faults_of_repeated_large_tensors():
    kept, before, after = probe()
    assert kept
    assert before > 20_000  # 10 x 48 MiB = 120,000 pages of 4 KiB under glibc's defaults
    assert after < before / 20


@glibc_only
def test_keep_freed_memory_can_be_switched_off():
    kept, before, after = probe(DDPMLAB_MALLOC_TUNING="0")
    assert not kept
    assert after > before / 2

"""Data-parallel processes on torchrun: environment, process group, devices, rank-0 I/O, small collectives.

`torchrun --nproc_per_node=N -m ddpmlab train ...` starts N copies of the same program and gives each one
RANK (0..WORLD_SIZE-1 over all machines), WORLD_SIZE and LOCAL_RANK (its index on its machine). Inside `session()`
the processes form one process group (gloo for CPU tensors, NCCL for CUDA tensors). Outside torchrun, or with one
process, every helper below is a no-op for a single process, so train.py and the samplers read the same either way.

Notation: W = world size (number of processes), r = this process's rank; rank 0 is the one that writes files.
Test hook: DDPMLAB_TEST_FAIL_RANK=r makes rank r raise right after joining the group (tests/test_distributed.py
uses it to check that one failing process brings the whole job down instead of hanging).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from .errors import ConfigError, RunError
from .runtime import pick_device

TIMEOUT_ENV = "DDPMLAB_DIST_TIMEOUT"  # seconds a collective waits for a silent peer before failing (default 600)
FAIL_RANK_ENV = "DDPMLAB_TEST_FAIL_RANK"  # test hook, see the module docstring


@dataclass(frozen=True)
class Launch:
    """What torchrun tells a process about its place in the job."""

    rank: int
    world_size: int
    local_rank: int


def launch_env() -> Launch | None:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them, or None when not started by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return Launch(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; start the job with torchrun") from None


def active() -> bool:
    """True inside a session() with more than one process."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the only process that writes files, logs and progress bars."""
    return rank() == 0


def _timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "600")
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds; got {raw!r}") from None
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def session(quiet_others: bool = False) -> Iterator[None]:
    """Join torchrun's process group for the duration; a no-op outside torchrun, for W = 1, or when already joined.

    The group is always destroyed on the way out, and a collective whose peer died or stayed silent past the
    timeout ends as a one-line RunError instead of a hang. quiet_others=True mutes stdout on ranks > 0
    (their errors and warnings still reach stderr).
    """
    env = launch_env()
    if env is None or env.world_size == 1 or active():
        yield
        return
    if torch.cuda.is_available() and env.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(env.local_rank)
    # Two backends in one group: gloo carries CPU tensors (flags, gathered samples), NCCL the CUDA gradients.
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=_timeout())
    try:
        if os.environ.get(FAIL_RANK_ENV) == str(env.rank):
            raise RunError(f"rank {env.rank} failed on purpose ({FAIL_RANK_ENV}={env.rank}, a test hook)")
        with open(os.devnull, "w") as devnull, contextlib.ExitStack() as mute:
            if quiet_others and env.rank > 0:
                mute.enter_context(contextlib.redirect_stdout(devnull))
            yield
    except RuntimeError as exc:
        if not _lost_peer(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RunError(f"rank {env.rank} lost contact with the other processes ({first}); another process "
                       "probably failed first: see its error above") from None
    finally:
        dist.destroy_process_group()


def _lost_peer(exc: RuntimeError) -> bool:
    """A collective that failed because a peer died or timed out (gloo raises plain RuntimeErrors)."""
    return isinstance(exc, dist.DistError) or any(
        s in str(exc) for s in ("gloo/transport", "Connection reset by peer", "Connection closed by peer", "NCCL"))


def device_for(name: str = "auto") -> torch.device:
    """This process's device: pick_device(name), with CUDA pinned to cuda:LOCAL_RANK when several processes run."""
    device = pick_device(name)
    if not active():
        return device
    if device.type == "mps":
        raise ConfigError("multi-process training on Apple MPS is not supported; use --set train.device=cpu")
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(f"device {name} would put every process on one GPU; under torchrun use auto or cuda "
                              "(process r gets cuda:LOCAL_RANK)")
        env = launch_env()
        local = env.local_rank if env else 0
        if local >= torch.cuda.device_count():
            raise ConfigError(f"process LOCAL_RANK={local} has no GPU of its own ({torch.cuda.device_count()} visible); "
                              "start at most that many processes per machine, or use --set train.device=cpu")
        return torch.device("cuda", local)
    return device


def local_batch(batch_size: int, grad_accum: int) -> int:
    """The micro-batch one process runs per forward: the global batch over W processes and grad_accum steps."""
    parts = world_size() * grad_accum
    if batch_size % parts:
        raise ConfigError(f"train.batch_size={batch_size} is the global batch and must split evenly over "
                          f"{world_size()} process(es) x train.grad_accum={grad_accum}; use a multiple of {parts}")
    return batch_size // parts


def shard(n: int) -> slice:
    """This rank's contiguous share of n items: rank r gets [n r / W, n (r + 1) / W)."""
    w, r = world_size(), rank()
    return slice(n * r // w, n * (r + 1) // w)


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel(model) when several processes run (it averages gradients in backward), else model.

    The optimizer, EMA and checkpoints keep using the bare model: its state_dict has no `module.` prefixes.
    """
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    # 1x1 convolutions get weight gradients whose strides differ from the parameter's only along size-1 dims
    # (the same memory layout); DDP warns about it on every process, harmlessly.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(net: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce for this forward + backward unless sync (gradient accumulation)."""
    if sync or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over all processes (one all-reduce MAX), so that every rank takes the same branch."""
    if not active():
        return flags
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def smallest(value: int) -> int:
    """The smallest of the processes' values (one all-reduce MIN); value itself for one process."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of x over all processes (x itself for one process)."""
    if not active():
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


def barrier() -> None:
    """Wait until every process gets here (an all-reduce of a CPU tensor: works on gloo and gloo+NCCL alike)."""
    any_rank(False)


@contextlib.contextmanager
def rank0_first() -> Iterator[None]:
    """Run the body on rank 0 first, then on the other ranks (e.g. a download into a shared folder)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def gather_shards(part: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's shard(n) rows, in rank (= index) order, on every rank. part: (len(shard(n)), ...)."""
    if not active():
        return part
    w = world_size()
    sizes = [n * (r + 1) // w - n * r // w for r in range(w)]
    padded = torch.zeros((max(sizes), *part.shape[1:]), dtype=part.dtype, device=part.device)
    padded[: len(part)] = part
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:k] for p, k in zip(parts, sizes)])

"""Data-parallel training and sampling on torchrun: 2 CPU processes (gloo) against one process.

Each torchrun launch costs a few seconds of start-up, so the 2-process training run is made once per module
and shared by the tests that inspect it.
"""

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ddpmlab import checkpoint as ckpt
from ddpmlab.config import build_config
from ddpmlab.errors import ConfigError
from ddpmlab.sampling import load_run, sample, with_sample_settings
from ddpmlab.train import train

from helpers import moons_config, tiny_image_config

QUIET = dict(progress=False, log=lambda s: None)
# The moons MLP with labels (and label dropout) on the 8-Gaussian mixture, which needs no scikit-learn import (a
# torchrun launch pays every import twice); global batch 64; a constant learning rate, so runs of different lengths
# share their first steps.
MOONS = ["data.name='gmm8'", "model.num_classes=8", "train.batch_size=64", "train.log_every=5",
         "train.ckpt_every=10", "train.warmup=5"]
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "TORCHELASTIC_RUN_ID", "DDPMLAB_TEST_FAIL_RANK")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    return {**env, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **extra}


def torchrun(*args: str, nproc: int = 2, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 -m ddpmlab ARGS` (standalone: a free local port)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ddpmlab", *args]
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def losses(run_dir) -> list[tuple[int, float]]:
    with open(run_dir / ckpt.METRICS) as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def assert_same_weights(a_dir, b_dir, rtol=1e-5, atol=1e-6) -> None:
    for name in (ckpt.MODEL, ckpt.EMA):
        a, b = load_file(a_dir / name), load_file(b_dir / name)
        assert a.keys() == b.keys(), name
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=f"{name}:{k}")


def assert_same_losses(a_dir, b_dir, rtol=1e-5) -> None:
    la, lb = losses(a_dir), losses(b_dir)[: len(losses(a_dir))]
    assert [s for s, _ in la] == [s for s, _ in lb]
    assert np.allclose([v for _, v in la], [v for _, v in lb], rtol=rtol, atol=1e-6), (la, lb)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """20 steps of the MLP on 2 processes at global batch 64."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    sets = [a for s in MOONS for a in ("--set", s)]
    proc = ok(torchrun("train", "--preset", "moons", "--out", str(run), "--steps", "20", *sets))
    return run, proc


def test_two_processes_match_one_process_at_the_same_global_batch(ddp_run, tmp_path):
    run, _ = ddp_run
    train(moons_config(*MOONS, "train.steps=20"), tmp_path / "single", **QUIET)
    assert [s for s, _ in losses(run)] == [5, 10, 15, 20]
    assert_same_losses(run, tmp_path / "single")
    assert_same_weights(run, tmp_path / "single")
    assert ckpt.load_state(run)["step"] == 20


def test_only_rank_0_writes_and_the_checkpoint_samples_in_one_process(ddp_run, tmp_path):
    run, proc = ddp_run
    train(moons_config(*MOONS, "train.steps=20"), tmp_path / "single", **QUIET)

    def files(d):
        return sorted("events" if "tfevents" in p.name else str(p.relative_to(d)) for p in d.rglob("*"))

    assert files(run) == files(tmp_path / "single")  # one TensorBoard file, no stray temp or duplicate files
    assert len(list(run.glob("events.out.tfevents*"))) == 1
    assert proc.stdout.count("training moons") == 1 and proc.stdout.count("done: step 20") == 1
    assert "x 2 processes" in proc.stdout
    assert all(not k.startswith("module.") for k in load_file(run / ckpt.MODEL))
    points = sample(with_sample_settings(load_run(run), steps=10), 100)
    assert points.shape == (100, 2) and torch.isfinite(points).all()


def test_resume_2_then_1_then_2_processes_equals_one_straight_run(ddp_run, tmp_path):
    """The checkpoint holds the global batch's data order and random streams, whatever the world size.

    The last leg also switches on gradient accumulation (2 micro-batches per process, DDP no_sync)."""
    run = tmp_path / "run"
    shutil.copytree(ddp_run[0], run)
    train(moons_config(*MOONS, "train.steps=40"), run, resume=True, **QUIET)
    assert ckpt.load_state(run)["step"] == 40
    ok(torchrun("train", "--resume", str(run), "--steps", "60", "--set", "train.grad_accum=2", "--quiet"))
    assert ckpt.load_state(run)["step"] == 60
    train(moons_config(*MOONS, "train.steps=60"), tmp_path / "straight", **QUIET)
    assert [s for s, _ in losses(run)] == list(range(5, 61, 5))
    assert_same_losses(run, tmp_path / "straight")
    assert_same_weights(run, tmp_path / "straight")


def test_distributed_sampling_gives_the_images_of_one_process(tmp_path):
    """A class-conditional image run with guidance: labels and per-sample noise follow the index across ranks."""
    run = tmp_path / "img"
    train(tiny_image_config("train.steps=4", "model.num_classes=10"), run, **QUIET)
    # `--`: torchrun would read --n as an abbreviation of its own --nnodes / --nproc-per-node
    args = ["--", "sample", str(run), "--n", "20", "--steps", "4", "--guidance", "1", "--seed", "3", "--batch-size", "8"]
    out = ok(torchrun(*args, "--out", str(tmp_path / "ddp.png")))
    assert out.stdout.count("wrote") == 2  # rank 0's PNG and .npz only
    single = with_sample_settings(load_run(run), steps=4, guidance=1.0, seed=3, batch_size=8)
    labels = torch.arange(10).repeat_interleave(2)  # the CLI's default for a conditional run: each class in turn
    expected = sample(single, 20, labels=labels)
    got = np.load(tmp_path / "ddp.npz")
    from ddpmlab.viz import to_uint8

    assert np.array_equal(got["labels"], labels.numpy())
    assert np.array_equal(got["images"], to_uint8(expected))


def test_a_failing_rank_brings_the_job_down_with_its_error(tmp_path):
    proc = torchrun("train", "--preset", "moons", "--out", str(tmp_path / "r"), "--steps", "5", "--quiet",
                    timeout=90, DDPMLAB_TEST_FAIL_RANK="1")
    assert proc.returncode != 0
    assert "ddpmlab: error: rank 1 failed on purpose" in proc.stderr
    assert not (tmp_path / "r" / ckpt.MODEL).exists()


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    train(moons_config(*MOONS, "train.steps=10"), tmp_path / "k1", **QUIET)
    train(moons_config(*MOONS, "train.steps=10", "train.grad_accum=4"), tmp_path / "k4", **QUIET)
    assert_same_losses(tmp_path / "k1", tmp_path / "k4")
    assert_same_weights(tmp_path / "k1", tmp_path / "k4")


def test_batch_that_does_not_split_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"train.batch_size=64 .*train.grad_accum=3; use a multiple of 3"):
        train(moons_config(*MOONS, "train.grad_accum=3"), tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="train.grad_accum must be positive"):
        build_config("moons", None, ["train.grad_accum=0"])

"""The promises of the README's "What ddpmlab promises": exact resume, crash safety, graceful stop,
non-finite steps, disk full."""

import importlib
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ddpmlab import checkpoint as ckpt
from ddpmlab.errors import RunError
from ddpmlab.sampling import load_run
from ddpmlab.train import train

train_module = importlib.import_module("ddpmlab.train")  # the module: `ddpmlab.train` is the function

from helpers import moons_config, tiny_image_config

QUIET = dict(progress=False, log=lambda s: None)


def _tensors(obj, prefix=""):
    """Flatten nested dicts/lists of tensors (optimizer state) into {path: tensor}."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


def test_resume_is_bit_exact_with_dropout_flips_and_label_dropout(tmp_path):
    extra = ("model.dropout=0.1", "data.hflip=true", "model.num_classes=10", "train.p_uncond=0.3",
             "train.ckpt_every=5", "train.lr_schedule='cosine'")
    train(tiny_image_config("train.steps=10", *extra), tmp_path / "straight", **QUIET)
    train(tiny_image_config("train.steps=5", *extra), tmp_path / "split", **QUIET)
    train(tiny_image_config("train.steps=10", *extra), tmp_path / "split", resume=True, **QUIET)
    for name in (ckpt.MODEL, ckpt.EMA):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    sa, sb = ckpt.load_state(tmp_path / "straight"), ckpt.load_state(tmp_path / "split")
    ta, tb = _tensors(sa), _tensors(sb)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert sa["ema_updates"] == sb["ema_updates"] == 10 and sa["pos"] == sb["pos"]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _train_cmd(run, steps=100000, every=1):
    # gmm8 points need no scikit-learn import: each of the many processes here starts 1.6 s sooner
    return [sys.executable, "-m", "ddpmlab", "train", "--preset", "moons", "--data", "gmm8", "--out", str(run),
            "--quiet", "--steps", str(steps), "--set", f"train.ckpt_every={every}", "--set", f"train.log_every={every}",
            "--set", "train.batch_size=32", "--set", "train.keep=2"]


def test_sigkill_at_random_moments_never_loses_more_than_one_interval(tmp_path):
    """20 kills, many landing inside a checkpoint write (one is written every step)."""
    rng = random.Random(0)
    run = tmp_path / "run"
    subprocess.run(_train_cmd(run, steps=3), check=True, env=_env(), timeout=120)
    for trial in range(20):
        resume = [sys.executable, "-m", "ddpmlab", "train", "--resume", str(run), "--quiet", "--steps", "100000"]
        lines_before = len((run / ckpt.METRICS).read_text().splitlines())
        proc = subprocess.Popen(resume, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120  # wait until this process is training (import time varies with load)
        while len((run / ckpt.METRICS).read_text().splitlines()) <= lines_before and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.random() * 0.5)  # then kill at a random moment: a checkpoint is written every step
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        newest = ckpt.latest_checkpoint(run)
        state = ckpt.load_state(newest)
        assert load_file(newest / ckpt.EMA) and load_file(newest / ckpt.MODEL)
        logged = [int(line.split(",")[0]) for line in (run / ckpt.METRICS).read_text().splitlines()[1:] if line]
        assert state["step"] >= max(logged) - 1, (trial, state["step"], max(logged))
        assert load_run(run).step == state["step"]
    assert state["step"] > 3  # the trials did make progress


def test_sigint_and_sigterm_save_and_exit_0(tmp_path):
    for sig in (signal.SIGINT, signal.SIGTERM):
        run = tmp_path / f"run{int(sig)}"
        proc = subprocess.Popen(_train_cmd(run, every=100000), env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while not (run / ckpt.METRICS).exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert f"ddpmlab train --resume {run}" in out
        assert ckpt.load_state(run)["step"] > 0


def test_non_finite_steps_are_skipped_then_stop(tmp_path, monkeypatch):
    real = train_module.training_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] in (3, 4) else loss

    monkeypatch.setattr(train_module, "training_loss", flaky)
    logs = []
    train(moons_config("train.steps=20", "train.log_every=10"), tmp_path / "a", progress=False, log=logs.append)
    assert sum("update skipped" in m for m in logs) == 2
    assert (tmp_path / "a" / ckpt.METRICS).read_text().splitlines()[-1].endswith(",2")
    assert all(torch.isfinite(v).all() for v in load_file(tmp_path / "a" / ckpt.MODEL).values())

    train(moons_config("train.steps=10", "train.ckpt_every=10"), tmp_path / "b", **QUIET)
    before = (tmp_path / "b" / ckpt.MODEL).read_bytes()
    monkeypatch.setattr(train_module, "training_loss", lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(RunError, match="non-finite steps in a row.*train.lr"):
        train(moons_config("train.steps=40", "train.ckpt_every=10", "train.max_nonfinite=3"), tmp_path / "b",
              resume=True, **QUIET)
    assert (tmp_path / "b" / ckpt.MODEL).read_bytes() == before
    assert ckpt.load_state(tmp_path / "b")["step"] == 10


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real = ckpt._save_weights
    calls = {"n": 0}

    def full(path, module, step):
        calls["n"] += 1
        if step > 10:
            raise OSError(28, "No space left on device")
        return real(path, module, step)

    monkeypatch.setattr(ckpt, "_save_weights", full)
    with pytest.raises(RunError, match=r"No space left on device.*step_000000010, is intact"):
        train(moons_config("train.steps=30", "train.ckpt_every=10"), tmp_path / "r", **QUIET)
    assert ckpt.load_state(tmp_path / "r")["step"] == 10
    assert [p.name for p in ckpt.snapshots(tmp_path / "r")] == ["step_000000010"]
    assert not list((tmp_path / "r" / ckpt.CHECKPOINTS).glob(".tmp*"))
    assert load_run(tmp_path / "r").step == 10


def test_keep_rotation_keeps_the_newest(tmp_path):
    train(moons_config("train.steps=50", "train.ckpt_every=10", "train.keep=2"), tmp_path / "r", **QUIET)
    assert [p.name for p in ckpt.snapshots(tmp_path / "r")] == ["step_000000040", "step_000000050"]
    assert os.path.samefile(tmp_path / "r" / ckpt.EMA, tmp_path / "r" / ckpt.CHECKPOINTS / "step_000000050" / ckpt.EMA)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("parts") / "run"
    train(tiny_image_config("train.steps=2"), run, **QUIET)
    return run


def _sample_cmd(run, out, n, batch, *extra):
    return [sys.executable, "-m", "ddpmlab", "sample", str(run), "--n", str(n), "--batch-size", str(batch),
            "--steps", "4", "--precision", "fp32", "--out", str(out), *extra]


def test_sampling_in_parts_keeps_finished_batches_after_a_crash_and_resumes_exactly(image_run, tmp_path,
                                                                                   monkeypatch):
    from ddpmlab import sample_files as S
    from ddpmlab.sampling import sample, with_sample_settings
    from ddpmlab.viz import to_uint8

    run = with_sample_settings(load_run(image_run), steps=4, batch_size=8, precision="fp32")
    straight = sample(run, 44)  # the same batches in one call
    out = tmp_path / "s.png"
    real_save, saved = S.save_npz, []

    def crash_after_three(path, *a, **k):
        if len(saved) == 3:
            raise RuntimeError("simulated crash")
        real_save(path, *a, **k)
        saved.append(path)

    monkeypatch.setattr(S, "save_npz", crash_after_three)
    with pytest.raises(RuntimeError, match="simulated"):
        S.sample_in_parts(run, 44, out)
    monkeypatch.setattr(S, "save_npz", real_save)
    kept = sorted(p.name for p in S.parts_dir(out).glob("*.npz"))
    assert kept == ["000000000-000000008.npz", "000000008-000000016.npz", "000000016-000000024.npz"]
    calls, real_generate = [], S.generate

    def counting(*a, **k):
        calls.append(k["part"])
        return real_generate(*a, **k)

    monkeypatch.setattr(S, "generate", counting)
    resumed, before = S.sample_in_parts(run, 44, out)
    assert before == 24 and calls == [slice(24, 32), slice(32, 40), slice(40, 44)]  # only the missing batches
    assert np.array_equal(to_uint8(resumed), to_uint8(straight))


def test_sample_cli_resumes_after_sigkill_and_refuses_other_settings(image_run, tmp_path):
    out = tmp_path / "big.png"
    parts = tmp_path / "big.parts"
    proc = subprocess.Popen(_sample_cmd(image_run, out, 300, 2), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(parts.glob("*.npz"))) < 3 and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists(), "the sampling finished before the kill; make the job longer"
    written = len(list(parts.glob("*.npz")))
    assert written >= 3
    # other settings: refused with the reason, the finished parts untouched
    other = subprocess.run(_sample_cmd(image_run, out, 300, 2, "--seed", "5"), env=_env(), capture_output=True,
                           text=True, timeout=120)
    assert other.returncode == 2 and "seed: 0 -> 5" in other.stderr and "Traceback" not in other.stderr
    assert len(list(parts.glob("*.npz"))) == written
    # the same command (a smaller batch size does not matter) finishes only the rest, then tidies up
    done = subprocess.run(_sample_cmd(image_run, out, 300, 50), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {2 * written} of 300 samples" in done.stdout
    assert not parts.exists()
    images = np.load(out.with_suffix(".npz"))["images"]
    from ddpmlab.sampling import sample, with_sample_settings
    from ddpmlab.viz import to_uint8

    run = with_sample_settings(load_run(image_run), steps=4, batch_size=2, precision="fp32")
    assert images.shape[0] == 300 and np.array_equal(images[:10], to_uint8(sample(run, 10)))


def test_grid_of_a_large_set_shows_at_most_1024_and_the_npz_keeps_all(image_run, tmp_path):
    from PIL import Image

    from ddpmlab import sample_files as S

    run = load_run(image_run)
    x = torch.rand(1100, *run.item_shape) * 2 - 1
    S.write_samples(run, x, tmp_path / "g.png")
    side = run.item_shape[-1]
    with Image.open(tmp_path / "g.png") as im:
        assert im.size[0] == 32 * (side + 2) + 2  # 32 x 32 = 1024 cells, torchvision's padding of 2
    assert np.load(tmp_path / "g.npz")["images"].shape[0] == 1100

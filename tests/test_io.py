"""Run locks and the run-directory guards of `ddpmlab train`: one writer at a time, no writing among user files."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ddpmlab.cli import main
from ddpmlab.io import LOCK, run_lock

GMM = ["--preset", "moons", "--data", "gmm8", "--quiet", "--set", "train.batch_size=32", "--set", "train.log_every=5"]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _wait_for_lock_holder(run, proc, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        held = (run / LOCK).exists() and (run / LOCK).read_text().strip() == str(proc.pid)
        if held and (run / "model.safetensors").exists():  # holding the lock, with a checkpoint written
            return
        assert proc.poll() is None, "the training process ended before it took the lock"
        time.sleep(0.1)
    raise AssertionError("the training process never took the run lock")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "ddpmlab", "train", *GMM, "--steps", "100000", "--out", str(run),
                              "--set", "train.ckpt_every=5"],
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_lock_holder(run, first)
        assert main(["train", *GMM, "--steps", "5", "--out", str(run), "--force"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"ddpmlab: error: {run} is in use by another ddpmlab process (pid {first.pid}); "
                       "wait for it to finish or stop it, or choose another directory")
        assert main(["train", "--resume", str(run), "--quiet"]) == 2
        assert f"pid {first.pid}" in capsys.readouterr().err
    finally:
        first.terminate()
        first.wait(timeout=60)
    # the kernel released the lock with the process: the run can be resumed now
    assert main(["train", "--resume", str(run), "--quiet", "--minutes", "0.01"]) == 0


def test_lock_is_exclusive_and_released(tmp_path):
    run = tmp_path / "r"
    with run_lock(run):
        assert (run / LOCK).read_text() == str(os.getpid())
        code = f"from ddpmlab.io import run_lock\nwith run_lock({str(run)!r}): pass"
        proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and f"pid {os.getpid()}" in proc.stderr
    with run_lock(run):  # released: taking it again works
        pass


def test_a_failed_start_leaves_no_directory_behind(tmp_path):
    run = tmp_path / "new"
    with pytest.raises(ValueError):
        with run_lock(run):
            raise ValueError("boom")
    assert not run.exists()


def test_resuming_a_finished_run_says_how_to_extend_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *GMM, "--steps", "5", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{run} is already at its last step (5 of train.steps=5); nothing to train." in out
    assert "--set train.steps=10" in out and "loss nan" not in out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_out_among_user_files_is_refused_unless_forced(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    assert main(["train", *GMM, "--steps", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not empty and holds no run (1 entries, e.g. thesis.tex)" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert main(["train", *GMM, "--steps", "3", "--out", str(out), "--force"]) == 0
    assert (out / "thesis.tex").read_text() == "keep me" and (out / "config.toml").exists()


def test_folder_smaller_than_the_batch_trains_with_capped_batches(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="train.batch_size=64 exceeds the 5 items .* batches of 5, so every step is "
                                         "one epoch"):
        assert main(["train", "--preset", "mnist", "--data", f"folder:{folder}", "--steps", "2", "--out", str(run),
                     "--quiet", "--set", "model.channels=8", "--set", "model.channel_mults=[1, 2]",
                     "--set", "model.attention_resolutions=[]", "--set", "train.batch_size=64",
                     "--set", "data.clusters=0", "--set", "sample.guidance=0", "--set", "sample.guidance_interval=[]"]) == 0
    assert "batch_size = 5" in (run / "config.toml").read_text()


def test_a_locked_run_refuses_sampling_into_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *GMM, "--steps", "3", "--out", str(run)]) == 0
    code = f"from ddpmlab.io import run_lock\nimport time\nwith run_lock({str(run)!r}): time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", code], env=_env())
    try:
        end = time.monotonic() + 30
        while (run / LOCK).read_text().strip() != str(holder.pid) and time.monotonic() < end:
            time.sleep(0.05)
        assert main(["sample", str(run), "--n", "8"]) == 2
        assert f"in use by another ddpmlab process (pid {holder.pid})" in capsys.readouterr().err
        assert not (run / "samples.png").exists()
        assert main(["sample", str(run), "--n", "8", "--out", str(tmp_path / "elsewhere.png")]) == 0  # not a write
    finally:
        holder.kill()
        holder.wait()

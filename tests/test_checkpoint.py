import pickle

import pytest
import torch

from ddpmlab import checkpoint as ckpt
from ddpmlab.errors import RunError
from ddpmlab.sampling import load_run
from ddpmlab.train import train

from helpers import moons_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "moons"
    train(moons_config("train.steps=30"), path, progress=False, log=lambda s: None)
    return path


def test_round_trip_gives_identical_outputs(run_dir, tmp_path):
    run = load_run(run_dir, weights="model")
    x, t = torch.randn(8, 2), torch.randint(1, 100, (8,))
    before = run.model(x, t)
    ckpt._save_weights(tmp_path / "w.safetensors", run.model, 30)
    other = load_run(run_dir, weights="ema").model
    assert ckpt.load_weights(tmp_path / "w.safetensors", other) == 30
    assert torch.equal(other(x, t), before)


def test_state_loads_with_weights_only(run_dir):
    state = torch.load(run_dir / ckpt.STATE, weights_only=True)
    assert state["step"] == 30 and "optimizer" in state
    assert ckpt.load_state(run_dir)["step"] == 30


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickle_is_refused_and_never_executed(run_dir, tmp_path):
    bad = tmp_path / "bad_run"
    bad.mkdir()
    for name in (ckpt.CONFIG, ckpt.META, ckpt.MODEL, ckpt.EMA):
        (bad / name).write_bytes((run_dir / name).read_bytes())
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "x": _Payload(str(marker))}, bad / ckpt.STATE)
    with pytest.raises(RunError, match="refused"):
        ckpt.load_state(bad)
    assert not marker.exists()
    # disguised as weights: not a safetensors file
    (bad / ckpt.EMA).write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(RunError, match="safetensors"):
        load_run(bad)
    assert not marker.exists()


def test_truncated_weights_and_missing_run(run_dir, tmp_path):
    bad = tmp_path / "trunc"
    bad.mkdir()
    for name in (ckpt.CONFIG, ckpt.META):
        (bad / name).write_bytes((run_dir / name).read_bytes())
    with pytest.raises(RunError, match="no saved weights"):
        load_run(bad)
    (bad / ckpt.EMA).write_bytes((run_dir / ckpt.EMA).read_bytes()[:200])
    with pytest.raises(RunError, match="truncated"):
        load_run(bad)
    with pytest.raises(RunError, match="not a ddpmlab run"):
        load_run(tmp_path)


def test_config_drift_names_the_mismatching_keys(run_dir, tmp_path):
    drift = tmp_path / "drift"
    drift.mkdir()
    for name in (ckpt.META, ckpt.MODEL, ckpt.EMA, ckpt.STATE):
        (drift / name).write_bytes((run_dir / name).read_bytes())
    text = (run_dir / ckpt.CONFIG).read_text().replace("hidden = 128", "hidden = 64")
    (drift / ckpt.CONFIG).write_text(text)
    with pytest.raises(RunError, match=r"7 shape mismatches \(e\.g\. net\.0\.bias: saved \(128,\), config \(64,\)\)"):
        load_run(drift)


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        ckpt.atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]

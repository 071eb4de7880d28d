import csv

import torch

from ddpmlab import checkpoint as ckpt
from ddpmlab.data import toy_points
from ddpmlab.sampling import load_run, sample, with_sample_settings
from ddpmlab.train import train

from helpers import moons_config, tiny_image_config


def losses(run_dir):
    with open(run_dir / ckpt.METRICS) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def nn_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.cdist(a, b).min(dim=1).values.mean().item()


def test_moons_training_learns_the_distribution(tmp_path):
    cfg = moons_config("train.steps=3000", "train.lr=3e-3", "train.batch_size=512")
    result = train(cfg, tmp_path / "moons", progress=False, log=lambda s: None)
    assert result.step == 3000
    curve = losses(tmp_path / "moons")
    assert sum(curve[-5:]) / 5 < 0.6 * curve[0]
    run = load_run(tmp_path / "moons")
    samples = sample(with_sample_settings(run, steps=50), 1000)
    data, _ = toy_points("moons", 5000, seed=7)
    noise = torch.randn(1000, 2)
    d_samples, d_noise = nn_distance(samples, data), nn_distance(noise, data)
    assert torch.isfinite(samples).all()
    assert d_samples < 0.25 * d_noise, (d_samples, d_noise)


def test_image_training_reduces_loss(tmp_path):
    cfg = tiny_image_config("train.steps=150", "train.lr=3e-3", "train.log_every=25")
    train(cfg, tmp_path / "img", progress=False, log=lambda s: None)
    curve = losses(tmp_path / "img")
    assert curve[-1] < 0.5 * curve[0], curve


def test_time_budget_stops_cleanly_and_saves(tmp_path):
    cfg = moons_config("train.steps=1000000", "train.minutes=0.03")
    result = train(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    assert result.stopped_early and 0 < result.step < 1000000
    assert ckpt.load_state(tmp_path / "r")["step"] == result.step


def test_existing_run_is_never_overwritten(tmp_path):
    import pytest

    from ddpmlab.errors import RunError

    cfg = moons_config("train.steps=10")
    train(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    before = (tmp_path / "r" / ckpt.MODEL).read_bytes()
    with pytest.raises(RunError, match="--resume"):
        train(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    assert (tmp_path / "r" / ckpt.MODEL).read_bytes() == before


def test_resume_continues_to_the_same_weights(tmp_path):
    cfg20 = moons_config("train.steps=20", "train.ckpt_every=10")
    train(cfg20, tmp_path / "straight", progress=False, log=lambda s: None)
    cfg10 = moons_config("train.steps=10", "train.ckpt_every=10")
    train(cfg10, tmp_path / "split", progress=False, log=lambda s: None)
    train(cfg20, tmp_path / "split", resume=True, progress=False, log=lambda s: None)
    from safetensors.torch import load_file

    for name in (ckpt.MODEL, ckpt.EMA):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "split" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_memory_stays_flat_over_many_steps(tmp_path):
    """RSS after 300 steps vs after 2,300 more (the 20k-step version is benchmarks/bench_memory.py)."""
    from pathlib import Path

    def rss_mb():
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    train(moons_config("train.steps=300", "train.batch_size=64"), tmp_path / "r", progress=False, log=lambda s: None)
    start = rss_mb()
    result = train(moons_config("train.steps=2600", "train.batch_size=64"), tmp_path / "r", resume=True,
                   progress=False, log=lambda s: None)
    assert rss_mb() - start < 40, (start, rss_mb())
    import math

    assert math.isfinite(result.loss)


def test_ema_update_records_no_autograd_graph():
    """An EMA update under grad mode must not chain the EMA weights into the graph (a per-step memory leak)."""
    import copy

    import torch

    from ddpmlab.train import ema_update

    model = torch.nn.Linear(3, 2)
    ema = copy.deepcopy(model).requires_grad_(False)
    ema_update(ema, model, 0.9)
    assert all(not p.requires_grad and p.grad_fn is None for p in ema.parameters())

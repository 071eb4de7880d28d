"""The training levers of the recipe: log-normal noise levels, the power EMA, autoguidance, and --force."""

import dataclasses
import math

import pytest
import torch

from ddpmlab import checkpoint as ckpt
from ddpmlab.config import build_config
from ddpmlab.diffusion import T_SAMPLING
from ddpmlab.errors import ConfigError
from ddpmlab.guidance import autoguided
from ddpmlab.optim import ema_decay_at, power_ema_gamma
from ddpmlab.sampling import Run, check_guidance, sample, with_sample_settings
from ddpmlab.schedules import make_schedule
from ddpmlab.train import train

from helpers import tiny_image_config


def test_lognormal_t_has_the_asked_for_log_sigma_distribution():
    schedule = make_schedule("cosine", 1000)
    gen = torch.Generator().manual_seed(0)
    d = build_config("mnist", None, ["diffusion.t_sampling='lognormal'"]).diffusion
    t = T_SAMPLING["lognormal"](schedule, 50_000, d, gen, "cpu")
    assert t.min() >= 1 and t.max() <= 1000 and t.dtype == torch.long
    log_sigma = (schedule.sigma[t] / schedule.alpha[t]).log()
    # rounding up to the next discrete level shifts the mean by under half a level's gap
    assert abs(log_sigma.mean().item() + 1.2) < 0.05
    assert abs(log_sigma.std().item() - 1.2) < 0.05
    uniform = T_SAMPLING["uniform"](schedule, 50_000, d, gen, "cpu")
    assert (schedule.sigma[uniform] > schedule.alpha[uniform]).float().mean() > 0.45  # half the levels at sigma > 1
    assert (log_sigma > 0).float().mean() < 0.2


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2])
def test_power_ema_gamma_solves_edm2_eq2(sigma_rel):
    g = power_ema_gamma(sigma_rel)
    assert math.isclose(math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))), sigma_rel, rel_tol=1e-9)


def test_power_ema_weighs_update_i_by_i_to_the_gamma():
    tc = build_config("mnist", None, ["train.ema='power'", "train.ema_sigma_rel=0.1"]).train
    assert ema_decay_at(tc, 0) == 0.0  # the first update copies the weights
    n = 3000
    w = torch.randn(n, dtype=torch.float64)
    ema = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        ema = ema_decay_at(tc, i) * ema + (1 - ema_decay_at(tc, i)) * w[i]
    g = power_ema_gamma(0.1)
    weights = torch.arange(1, n + 1, dtype=torch.float64) ** g
    assert torch.isclose(ema, (weights * w).sum() / weights.sum(), rtol=0.02, atol=2e-3)


@pytest.mark.parametrize("setting, owner", [
    ("diffusion.t_mean=-1.0", "t_sampling"), ("diffusion.t_std=2.0", "t_sampling"),
    ("train.ema_sigma_rel=0.05", "train.ema"),
])
def test_a_setting_of_another_choice_is_refused(setting, owner):
    with pytest.raises(ConfigError, match=owner):
        build_config("fashion-mnist-cond", None, [setting])  # a preset with the constant EMA


def test_ema_decay_with_the_power_ema_is_refused_and_names_the_fix():
    with pytest.raises(ConfigError, match=r"train.ema_decay = 0.995 applies only with train.ema = \"constant\""):
        build_config("moons", None, ["train.ema='power'"])
    assert build_config("moons", None, ["train.ema='power'", "train.ema_decay=0.999"]).train.ema == "power"
    with pytest.raises(ConfigError, match="ema_sigma_rel must lie in"):
        build_config("mnist", None, ["train.ema='power'", "train.ema_sigma_rel=0.5"])
    with pytest.raises(ConfigError, match="guide_at must lie in"):
        build_config("mnist", None, ["train.guide_at=1.0"])


def test_autoguided_combines_the_two_networks():
    x, t = torch.randn(3, 1, 4, 4), torch.tensor([5, 6, 7])
    good = lambda x, t, y=None: 2 * x  # noqa: E731
    bad = lambda x, t, y=None: x + 1  # noqa: E731
    assert torch.equal(autoguided(good, bad, 0.0)(x, t), good(x, t))
    assert torch.allclose(autoguided(good, bad, 1.5)(x, t), 2.5 * good(x, t) - 1.5 * bad(x, t))


def test_a_run_with_guide_at_keeps_its_early_ema_and_samples_autoguided(tmp_path):
    cfg = tiny_image_config("train.guide_at=0.25", "sample.guidance=1")
    train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    guide_file = tmp_path / "run" / ckpt.GUIDE
    assert guide_file.is_file()
    from safetensors import safe_open

    with safe_open(str(guide_file), framework="pt") as f:
        assert f.metadata()["step"] == "5"  # 0.25 of 20 steps
    run = Run.load(tmp_path / "run", device="cpu")
    assert run.guide is not None and run.step == 20
    plain = sample(with_sample_settings(run, guidance=0.0), 4)
    guided_run = with_sample_settings(run, guidance=1.0)
    guided = sample(guided_run, 4)
    assert guided.shape == plain.shape and not torch.equal(guided, plain)
    from ddpmlab.sample_files import guidance_sweep

    assert guidance_sweep(run, [0.0, 1.0], tmp_path / "sweep.png", per_cell=2).is_file()  # one row, two blocks
    guided_run = dataclasses.replace(guided_run, guide=None)
    with pytest.raises(ConfigError, match="train.guide_at"):
        check_guidance(guided_run, 1.0)


def test_force_over_a_longer_run_starts_from_scratch(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_image_config("train.guide_at=0.5"), run_dir, progress=False, log=lambda _: None)
    assert (run_dir / ckpt.GUIDE).is_file()
    train(tiny_image_config("train.steps=10", "train.ckpt_every=5"), run_dir, overwrite=True, progress=False,
          log=lambda _: None)
    assert [p.name for p in ckpt.snapshots(run_dir)] == ["step_000000010"]
    assert not (run_dir / ckpt.GUIDE).exists()  # the old run's guide went with it
    assert Run.load(run_dir, device="cpu").step == 10
    train(tiny_image_config("train.steps=10", "train.guide_at=0.3"), run_dir, overwrite=True, progress=False,
          log=lambda _: None)
    from safetensors import safe_open

    with safe_open(str(run_dir / ckpt.GUIDE), framework="pt") as f:
        assert f.metadata()["step"] == "3"  # the new run's own guide


def test_a_time_budget_ends_the_learning_rate_schedule_where_the_budget_ends():
    from ddpmlab.optim import lr_at
    from ddpmlab.optim import Budget

    cfg = build_config("mnist", None, ["train.minutes=1", "train.steps=1000", "train.warmup=10", "data.clusters=0",
                                       "train.guide_at=0.3"])
    budget = Budget(cfg.train, 0, t_start=100.0)
    for step in range(1, 11):  # the first 5 steps settle; then 1 s per step
        budget.update(step, 100.0 + step)
    assert budget.end == 10 + 50  # 50 s left at 1 s per step
    assert lr_at(cfg, 60, budget.end) == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio)
    assert lr_at(cfg, 60) > 0.9 * cfg.train.lr  # the same step of a 1,000-step schedule has barely decayed
    assert not budget.out_of_time(159.0) and budget.out_of_time(161.0)
    assert budget.guide_due(18, kept=False) and not budget.guide_due(17, kept=False)  # guide_at 0.3 of 60
    assert not budget.guide_due(30, kept=True)
    fast = Budget(build_config("mnist", None, ["train.minutes=1", "train.steps=40"]).train, 0, t_start=0.0)
    for step in range(1, 21):
        fast.update(step, 0.01 * step)
    assert fast.end == 40  # train.steps fits in the budget: it stays the end
    unbudgeted = Budget(build_config("mnist", None, ["train.steps=40"]).train, 0, t_start=0.0)
    unbudgeted.update(20, 1e6)
    assert unbudgeted.end == 40 and not unbudgeted.out_of_time(1e9)


def test_resume_records_its_new_settings_in_the_run(tmp_path):
    from ddpmlab.cli import main

    run_dir = tmp_path / "run"
    train(tiny_image_config("train.steps=4"), run_dir, progress=False, log=lambda _: None)
    assert main(["train", "--resume", str(run_dir), "--set", "train.steps=6", "--quiet"]) == 0
    assert ckpt.read_config(run_dir).train.steps == 6 and Run.load(run_dir, device="cpu").step == 6

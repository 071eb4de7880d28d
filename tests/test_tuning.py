"""Tuned timesteps: the search (samplers/tuning.py), a run's timesteps.json (sampling.tune / --spacing tuned) and
`ddpmlab tune`."""

import json
import warnings

import pytest
import torch

from ddpmlab import checkpoint as ckpt
from ddpmlab.cli import main
from ddpmlab.errors import ConfigError
from ddpmlab.samplers import SAMPLERS, resolve_spacing
from ddpmlab.samplers.oracle import GaussianMixture, oracle_denoiser
from ddpmlab.samplers.tuning import sample_error, tune_timesteps
from ddpmlab.sampling import Run, generate, save_tuned, timesteps_of, tune, with_sample_settings
from ddpmlab.schedules import make_schedule, spaced_timesteps

SCHED = make_schedule("linear", 1000)
# narrow components of unequal weights and widths, off-centre (as benchmarks/sampler_oracle.py's first mixture)
MIX = GaussianMixture(torch.tensor([[1.5, -0.2], [-0.4, 0.9], [0.8, 1.6], [2.2, 0.7]], dtype=torch.float64),
                      torch.tensor([0.03, 0.1, 0.05, 0.2], dtype=torch.float64),
                      torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64))


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _tune_on_the_oracle(sampler: str, steps: int, check: bool):
    """Tune on 128 draws (checked on 128 others) as `ddpmlab tune` does; score on 400 more against the exact ODE
    (here a 400-step third-order solve): (result, error of the tuned timesteps, error of the start)."""
    oracle, run = oracle_denoiser(MIX, SCHED), SAMPLERS[sampler]
    held, other = _noise(128, 0), _noise(128, 2)
    reference, other_reference = (run(oracle, x, SCHED, spaced_timesteps(SCHED, 200, "logsnr")) for x in (held, other))
    start = spaced_timesteps(SCHED, steps, resolve_spacing(sampler, "auto", steps, SCHED.T))
    r = tune_timesteps(lambda ts: run(oracle, held, SCHED, ts), SCHED, start, reference, max_trials=150,
                       check=(lambda ts: run(oracle, other, SCHED, ts), other_reference) if check else None)
    x_T = _noise(400, 1)
    exact = SAMPLERS["dpmpp-3m"](oracle, x_T, SCHED, spaced_timesteps(SCHED, 400, "logsnr"))
    return (r, sample_error(run(oracle, x_T, SCHED, torch.tensor(r.timesteps)), exact),
            sample_error(run(oracle, x_T, SCHED, start), exact))


@pytest.mark.parametrize(("sampler", "steps"), [("unipc-3", 8), ("dpmpp-2m", 5)])
def test_tuned_timesteps_bring_other_noise_closer_to_the_exact_ode(sampler, steps):
    r, tuned, auto = _tune_on_the_oracle(sampler, steps, check=True)
    assert len(r.timesteps) == steps and r.timesteps[0] == SCHED.T and r.start[0] == SCHED.T
    assert all(a > b for a, b in zip(r.timesteps, r.timesteps[1:])) and r.timesteps[-1] >= 1
    assert r.trials <= 150 and r.error < 0.8 * r.error_start and r.check < 0.8 * r.check_start
    assert tuned < 0.8 * auto, (tuned, auto)


def test_a_fit_that_does_not_carry_over_to_the_check_draws_keeps_the_start():
    # dpmpp-2m at 8 steps: the levels fitted to 128 draws are further from the exact ODE on other noise than auto's
    unchecked, tuned, auto = _tune_on_the_oracle("dpmpp-2m", 8, check=False)
    assert unchecked.error < unchecked.error_start and tuned > auto
    checked, tuned, auto = _tune_on_the_oracle("dpmpp-2m", 8, check=True)
    assert checked.timesteps == checked.start and checked.check == checked.check_start and tuned == auto


def test_tuning_keeps_the_start_when_no_move_helps_and_stops_at_its_budget():
    oracle, run = oracle_denoiser(MIX, SCHED), SAMPLERS["unipc-3"]
    held = _noise(32, 0)
    start = spaced_timesteps(SCHED, 6, "logsnr-window")
    own = run(oracle, held, SCHED, start)  # the start's own output as the reference: its error is 0, unbeatable
    r = tune_timesteps(lambda ts: run(oracle, held, SCHED, ts), SCHED, start, own)
    assert r.timesteps == r.start and r.error == r.error_start == 0.0
    reference = run(oracle, held, SCHED, spaced_timesteps(SCHED, 200, "logsnr"))
    capped = tune_timesteps(lambda ts: run(oracle, held, SCHED, ts), SCHED, start, reference, max_trials=7)
    assert capped.trials == 7
    refined = tune_timesteps(lambda ts: run(oracle, held, SCHED, ts), SCHED, start, reference, grid=False,
                             max_trials=30)
    assert refined.error < refined.error_start and refined.trials <= 30  # coordinate descent alone also helps
    with pytest.raises(ValueError, match="at least 2 timesteps"):
        tune_timesteps(lambda ts: held, SCHED, torch.tensor([1000]), reference)


def test_the_reference_takes_at_least_four_times_the_tuned_steps_and_at_most_T():
    from ddpmlab.sampling import reference_steps_for

    assert reference_steps_for(5, 100, 1000) == 100
    assert reference_steps_for(50, 100, 1000) == 200
    assert reference_steps_for(20, 100, 100) == 100


def test_the_last_level_never_rises_above_the_start_s():
    # the start's own output, moved: a last level above the start's would be closer, and is not taken
    oracle, run = oracle_denoiser(MIX, SCHED), SAMPLERS["unipc-3"]
    held = _noise(32, 0)
    start = spaced_timesteps(SCHED, 5, "logsnr-window")
    higher = torch.tensor([*start[:-1].tolist(), int(start[-1]) + 60])
    target = run(oracle, held, SCHED, higher)
    r = tune_timesteps(lambda ts: run(oracle, held, SCHED, ts), SCHED, start, target, max_trials=80)
    assert r.timesteps[-1] <= r.start[-1] and r.error > 0


def test_sample_error_is_the_mean_l2_distance_and_inf_when_not_finite():
    ref = torch.zeros(2, 3)
    assert sample_error(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]), ref) == pytest.approx(3.0)
    assert sample_error(torch.tensor([[float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0]]), ref) == float("inf")


def _moons_run(tmp_path, **settings):
    """A Run of a small untrained MLP (moons preset, T = 100) whose run directory is tmp_path."""
    from ddpmlab.config import build_config
    from ddpmlab.models import build_model
    from ddpmlab.schedules import schedule_from_config

    cfg = build_config("moons", None, ["model.hidden=32", "model.depth=2", "diffusion.T=100"])
    torch.manual_seed(0)
    net = build_model(cfg, (2,)).eval()
    run = Run.from_training(cfg, net, schedule_from_config(cfg.diffusion), (2,), path=tmp_path, step=7)
    return with_sample_settings(run, **settings)


def test_a_run_samples_with_the_timesteps_tuned_for_its_sampler_and_steps(tmp_path):
    run = _moons_run(tmp_path, sampler="dpmpp-2m", steps=5, spacing="auto")
    r = tune(run, samples=16, reference_steps=50, max_trials=40)
    path = save_tuned(run, r, samples=16, reference_steps=50)
    entry = json.loads(path.read_text())["dpmpp-2m/5"]
    assert entry["timesteps"] == list(r.timesteps) and entry["checkpoint_step"] == 7 and entry["samples"] == 16
    assert entry["start_spacing"] == resolve_spacing("dpmpp-2m", "auto", 5, 100)
    tuned = with_sample_settings(run, spacing="tuned")
    assert timesteps_of(tuned).tolist() == list(r.timesteps)
    seen = []
    x = generate(tuned, 4, callback=lambda i, t, x, x0: seen.append(t))
    assert torch.isfinite(x).all() and seen == [*r.timesteps[1:], 0]
    # a second entry keeps the first
    save_tuned(with_sample_settings(run, steps=6), tune(with_sample_settings(run, steps=6), samples=8,
                                                         reference_steps=20, max_trials=5), samples=8,
               reference_steps=20)
    assert set(json.loads(path.read_text())) == {"dpmpp-2m/5", "dpmpp-2m/6"}


def test_tuned_spacing_without_an_entry_names_the_command_and_a_changed_checkpoint_warns(tmp_path):
    run = _moons_run(tmp_path, sampler="unipc-3", steps=5, spacing="tuned")
    with pytest.raises(ConfigError, match=r"no timesteps tuned for unipc-3 at 5 steps; run `ddpmlab tune .* "
                                          r"--sampler unipc-3 --steps 5`"):
        timesteps_of(run)
    save_tuned(run, tune(run, samples=8, reference_steps=20, max_trials=5), samples=8, reference_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        timesteps_of(run)  # same checkpoint, same guidance: no warning
    import dataclasses

    later = dataclasses.replace(run, step=8)
    with pytest.warns(UserWarning, match=r"fitted at checkpoint step 7 \(now 8\)"):
        timesteps_of(later)
    (tmp_path / ckpt.TUNED).write_text("{not json")
    with pytest.raises(Exception, match="unreadable.*delete it"):
        timesteps_of(run)


def test_tuning_refuses_samplers_that_draw_noise(tmp_path):
    with pytest.raises(ConfigError, match="ddpm draws noise at every step: choose one of ddim, dpmpp-2m"):
        tune(_moons_run(tmp_path, sampler="ddpm", steps=5))
    with pytest.raises(ConfigError, match=r"ddim with sample.eta = 0.5 draws noise: set it to 0"):
        tune(_moons_run(tmp_path, sampler="ddim", steps=5, eta=0.5))
    with pytest.raises(ConfigError, match="tuning fits solves of 2 to 20 steps, got sample.steps = 1"):
        tune(_moons_run(tmp_path, sampler="unipc-3", steps=1))
    with pytest.raises(ConfigError, match="got sample.steps = 21: at more steps the solve is as accurate as the "
                                          "reference"):
        tune(_moons_run(tmp_path, sampler="unipc-3", steps=21))
    assert not (tmp_path / ckpt.TUNED).exists()


def test_training_refuses_the_tuned_spacing_and_starting_over_drops_the_old_tuned_timesteps(tmp_path):
    from ddpmlab.train import train
    from helpers import moons_config

    with pytest.raises(ConfigError, match="sample.spacing = 'tuned'.*train with another spacing"):
        train(moons_config("sample.spacing='tuned'", "train.steps=2"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / ckpt.TUNED).write_text("{}")
    ckpt.clear_weights(tmp_path / "old")
    assert not (tmp_path / "old" / ckpt.TUNED).exists()


def test_the_tune_command_writes_timesteps_that_sample_then_uses(tmp_path, capsys):
    from helpers import cli_sets, moons_config  # noqa: F401

    run = tmp_path / "moons"
    assert main(["train", "--preset", "moons", "--steps", "30", "--out", str(run), "--quiet",
                 *cli_sets("model.hidden=32", "model.depth=2", "diffusion.T=100", "train.log_every=10")]) == 0
    capsys.readouterr()
    assert main(["tune", str(run), "--sampler", "unipc-3", "--steps", "5", "--samples", "16", "--trials", "30",
                 "--reference-steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "error against the reference" in out and f"ddpmlab sample {run} --sampler unipc-3 --steps 5" in out
    entry = json.loads((run / ckpt.TUNED).read_text())["unipc-3/5"]
    assert entry["trials"] <= 30 and entry["error"] <= entry["error_start"]
    assert main(["sample", str(run), "--sampler", "unipc-3", "--steps", "5", "--spacing", "tuned", "--n", "8",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    capsys.readouterr()
    assert main(["sample", str(run), "--sampler", "unipc-3", "--steps", "6", "--spacing", "tuned"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no timesteps tuned for unipc-3 at 6 steps" in err
    assert main(["eval", str(run), "--n", "200", "--sampler", "unipc-3", "--steps", "5", "--spacing", "tuned"]) == 0
    assert json.loads((run / "eval.json").read_text())["sampling"]["spacing"] == "tuned"
    capsys.readouterr()
    assert main(["tune", str(run), "--sampler", "ddpm"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "draws noise" in captured.err
    # ddim is tuned as the ODE solver whatever eta the run samples with
    assert main(["tune", str(run), "--sampler", "ddim", "--steps", "4", "--samples", "8", "--trials", "5",
                 "--reference-steps", "20"]) == 0
    assert "ddim/4" in json.loads((run / ckpt.TUNED).read_text())

import pytest
import torch

from ddpmlab.samplers import sample_ddpm
from ddpmlab.sampling import Run, generate, with_sample_settings
from ddpmlab.schedules import make_schedule, spaced_timesteps


def gaussian_oracle(schedule, mu: float, s: float):
    """Exact denoiser for data x0 ~ N(mu, s^2 I): E[x0 | x_t] in closed form."""

    def denoise(x_t, t):
        a, sig = schedule.at(schedule.alpha, t, x_t), schedule.at(schedule.sigma, t, x_t)
        var = a * a * s * s + sig * sig
        x0 = mu + a * s * s / var * (x_t - a * mu)
        return x0, (x_t - a * x0) / sig

    return denoise


@pytest.mark.parametrize("variance", ["beta", "posterior"])
@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_with_exact_denoiser_recovers_gaussian(variance, steps):
    sched = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    out = sample_ddpm(gaussian_oracle(sched, 1.5, 0.5), x_T, sched, spaced_timesteps(sched, steps),
                      variance=variance, generator=g)
    assert out.mean().item() == pytest.approx(1.5, abs=0.02)
    if steps == 1000:
        assert out.std().item() == pytest.approx(0.5, abs=0.015)
    else:
        # Respaced, the chain uses a point estimate of x0 at each of its 50 big steps: the exact variance
        # recursion gives std 0.444 with beta-tilde (under-dispersed) and 0.512 with beta.
        expected = 0.444 if variance == "posterior" else 0.512
        assert out.std().item() == pytest.approx(expected, abs=0.015)


def _mlp_run(**settings):
    """A Run of an untrained MLP on 2D points (moons preset at T = 100), sampled with DDPM."""
    from ddpmlab.config import build_config
    from ddpmlab.models import build_model
    from ddpmlab.schedules import schedule_from_config

    cfg = build_config("moons", None, ["model.hidden=32", "model.depth=2", "diffusion.T=100"])
    torch.manual_seed(0)
    net = build_model(cfg, (2,)).eval()
    run = Run.from_training(cfg, net, schedule_from_config(cfg.diffusion), (2,))
    return with_sample_settings(run, sampler="ddpm", **settings)


def test_same_seed_same_samples_whatever_the_batch_size():
    draw = lambda bs, seed: generate(_mlp_run(steps=20, seed=seed, batch_size=bs), 12)
    a, b, c = draw(12, 3), draw(5, 3), draw(12, 4)
    assert a.shape == (12, 2) and torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(a, draw(12, 3))
    assert not torch.allclose(a, c)


def test_a_part_of_the_indices_equals_that_slice_of_the_whole():
    run = _mlp_run(steps=10, seed=1, batch_size=4)
    assert torch.allclose(generate(run, 12, part=slice(5, 11)), generate(run, 12)[5:11], atol=1e-6)


def test_callback_sees_every_step_and_ends_at_the_result():
    seen = []
    out = generate(_mlp_run(steps=10), 4, callback=lambda i, t, x, x0: seen.append((t, x.clone())))
    assert [t for t, _ in seen][-1] == 0 and len(seen) == 10
    assert torch.equal(seen[-1][1], out)


def test_default_labels_are_class_blocks_with_every_class_present():
    from ddpmlab.sampling import default_labels

    assert default_labels(0, 5) is None
    assert default_labels(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert default_labels(4, 3).tolist() == [0, 1, 2]
    assert sorted(set(default_labels(10, 64).tolist())) == list(range(10))


def test_auto_precision_samples_v_networks_in_bf16_and_eps_networks_in_fp32(monkeypatch):
    from ddpmlab import runtime
    from ddpmlab.config import build_config
    from ddpmlab.sampling import _sample_in_bf16

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    cpu = torch.device("cpu")
    v = build_config("mnist")  # v-prediction
    eps = build_config("mnist", None, ["diffusion.prediction='eps'"])
    assert _sample_in_bf16(v, (1, 28, 28), cpu)
    assert not _sample_in_bf16(eps, (1, 28, 28), cpu)  # eps -> x0 divides by alpha_t: bf16 noise blows up
    assert _sample_in_bf16(build_config("mnist", None, ["diffusion.prediction='eps'", "sample.precision='bf16'"]),
                           (1, 28, 28), cpu)
    assert not _sample_in_bf16(build_config("mnist", None, ["sample.precision='fp32'"]), (1, 28, 28), cpu)
    assert not _sample_in_bf16(v, (2,), cpu)  # 2D data: always fp32
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert not _sample_in_bf16(v, (1, 28, 28), cpu)


def test_the_old_module_name_still_works_and_says_where_its_names_went():
    import importlib

    old = importlib.import_module("ddpmlab.sample")
    with pytest.warns(DeprecationWarning, match="ddpmlab.sample.load_run is now ddpmlab.sampling.load_run"):
        assert old.load_run is Run.load.__func__.__globals__["load_run"]
    with pytest.warns(DeprecationWarning, match="ddpmlab.sample_files.write_samples"):
        from ddpmlab.sample_files import write_samples

        assert old.write_samples is write_samples


def test_the_readme_imports_give_the_functions_not_their_modules():
    import subprocess
    import sys

    code = ("from ddpmlab import build_config, make_schedule, q_sample, train, load_run, generate, sample; "
            "print(all(callable(f) and not hasattr(f, '__path__') and type(f).__name__ == 'function' "
            "for f in (train, load_run, generate, sample)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr

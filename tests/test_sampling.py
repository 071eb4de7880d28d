import pytest
import torch

from ddpmlab.diffusion import make_denoiser
from ddpmlab.models import MLP, MLPConfig
from ddpmlab.samplers import sample_ddpm
from ddpmlab.samplers.run import generate
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


def _net():
    torch.manual_seed(0)
    net = MLP(MLPConfig(hidden=32, depth=2))
    return net.eval()


def test_same_seed_same_samples_whatever_the_batch_size():
    sched = make_schedule("cosine", 100)
    net = _net()
    den = lambda sl: make_denoiser(net, sched, "eps")
    run = lambda bs, seed: generate(den, sample_ddpm, sched, (2,), 12, steps=20, seed=seed, batch_size=bs)
    a, b, c = run(12, 3), run(5, 3), run(12, 4)
    assert a.shape == (12, 2) and torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(a, run(12, 3))
    assert not torch.allclose(a, c)


def test_callback_sees_every_step_and_ends_at_the_result():
    sched = make_schedule("cosine", 100)
    net = _net()
    seen = []
    out = generate(lambda sl: make_denoiser(net, sched, "eps"), sample_ddpm, sched, (2,), 4, steps=10,
                   callback=lambda i, t, x, x0: seen.append((t, x.clone())))
    assert [t for t, _ in seen][-1] == 0 and len(seen) == 10
    assert torch.equal(seen[-1][1], out)


def test_auto_precision_samples_v_networks_in_bf16_and_eps_networks_in_fp32(monkeypatch):
    from ddpmlab import runtime
    from ddpmlab.config import build_config
    from ddpmlab.samplers.run import _sample_in_bf16

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

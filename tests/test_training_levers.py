"""The noise-level densities, importance-sampled t, EDM's loss weight and preconditioning, EDM2's learned weight."""

import math

import pytest
import torch

from ddpmlab import checkpoint as ckpt
from ddpmlab.config import build_config
from ddpmlab.diffusion import T_SAMPLING, AdaptiveT, LogVar, prediction_spec, training_loss, v_target
from ddpmlab.errors import ConfigError
from ddpmlab.sampling import Run, sample
from ddpmlab.schedules import make_schedule
from ddpmlab.train import train

from helpers import tiny_image_config

QUIET = dict(progress=False, log=lambda _: None)


def _log_snr(schedule, t):
    return (schedule.alpha_bar[t] / (1 - schedule.alpha_bar[t])).log()


def test_laplace_t_has_the_asked_for_log_snr_density():
    schedule = make_schedule("cosine", 1000)
    d = build_config("mnist", None, ["diffusion.t_sampling='laplace'", "diffusion.t_loc=1.0",
                                     "diffusion.t_scale=0.5"]).diffusion
    t = T_SAMPLING["laplace"](schedule, 50_000, d, torch.Generator().manual_seed(0), "cpu")
    assert t.dtype == torch.long and t.min() >= 1 and t.max() <= 1000
    lam = _log_snr(schedule, t)
    assert abs(lam.median().item() - 1.0) < 0.03
    assert abs((lam - 1.0).abs().mean().item() - 0.5) < 0.02  # a Laplace density's mean |x - loc| is its scale
    assert ((lam - 1.0).abs() > 2.0).float().mean().item() == pytest.approx(math.exp(-4.0), abs=0.005)


def test_logistic_t_has_the_asked_for_log_snr_density():
    schedule = make_schedule("cosine", 1000)
    d = build_config("mnist", None, ["diffusion.t_sampling='logistic'", "diffusion.t_loc=-1.0",
                                     "diffusion.t_scale=1.0"]).diffusion
    lam = _log_snr(schedule, T_SAMPLING["logistic"](schedule, 50_000, d, torch.Generator().manual_seed(0), "cpu"))
    assert abs(lam.median().item() + 1.0) < 0.05
    assert lam.std().item() == pytest.approx(math.pi / math.sqrt(3), rel=0.03)


def test_adaptive_t_is_uniform_until_warm_then_keeps_the_uniform_objective():
    gen = torch.Generator().manual_seed(0)
    a = AdaptiveT(1000, bins=20, warmup=10)
    t, w = a.draw(5000, gen)
    assert torch.equal(w, torch.ones_like(w)) and t.min() >= 1 and t.max() <= 1000
    assert torch.bincount(a.bin_of(t), minlength=20).min() > 180  # uniform: 250 a bin expected
    loss = lambda t: 0.1 + (t.double() / 1000) ** 2  # noqa: E731  -- the loss grows with t
    a.observe(t, loss(t))
    t, w = a.draw(200_000, gen)
    counts = torch.bincount(a.bin_of(t), minlength=20)
    assert counts[-1] > 4 * counts[0]  # the draws go where the loss is
    assert (w.double() * loss(t)).mean().item() == pytest.approx(0.1 + 1 / 3, rel=0.01)  # uniform t's E[loss]
    assert w.double().mean().item() == pytest.approx(1.0, rel=0.01)
    state = a.state_dict()
    b = AdaptiveT(1000, bins=20)
    b.load_state_dict(state)
    assert torch.equal(b.probs(), a.probs())
    with pytest.raises(ValueError, match="bins"):
        AdaptiveT(1000, bins=10).load_state_dict(state)


def _zero(x, t, y=None):
    return torch.zeros_like(x)


def _per_sample(**kw):
    s = make_schedule("cosine", 1000)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    eps = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    t = torch.tensor([10, 200, 600, 950])
    return s, x0, eps, t, training_loss(_zero, s, x0, t, eps, reduce=False, **kw)


def test_edm_weight_is_lambda_sigma_on_the_x0_error_and_the_plain_v_loss_at_sigma_data_1():
    s, x0, eps, t, loss = _per_sample(prediction="x0", weighting="edm", sigma_data=0.5)
    noise = s.sigma[t] / s.alpha[t]  # EDM's sigma
    lam = (noise**2 + 0.25) / (noise * 0.5) ** 2
    assert torch.allclose(loss, lam * x0.pow(2).mean(1), rtol=1e-9)
    _, _, _, _, v_edm = _per_sample(prediction="v", weighting="edm", sigma_data=1.0)
    _, _, _, _, v_plain = _per_sample(prediction="v")
    assert torch.allclose(v_edm, v_plain, rtol=1e-9)


def test_edm_preconditioning_inverts_and_is_minus_v_at_sigma_data_1():
    s = make_schedule("cosine", 1000)
    t = torch.tensor([1, 250, 500, 999])
    a, sg = s.alpha[t][:, None].double(), s.sigma[t][:, None].double()
    gen = torch.Generator().manual_seed(2)
    x0 = 0.5 * torch.randn(4, 20_000, generator=gen, dtype=torch.float64)  # data of standard deviation 0.5
    eps = torch.randn(4, 20_000, generator=gen, dtype=torch.float64)
    spec = prediction_spec("edm", 0.5)
    x_t = a * x0 + sg * eps
    assert torch.allclose((spec.c_in(a, sg) * x_t).std(1), torch.ones(4, dtype=torch.float64), atol=0.02)
    target = spec.target(x0, eps, a, sg)
    assert torch.allclose(target.std(1), torch.ones(4, dtype=torch.float64), atol=0.02)  # a unit-variance target
    back = spec.split(target, x_t, a, sg)
    assert torch.allclose(back.x0, x0, atol=1e-9) and torch.allclose(back.eps, eps, atol=1e-9)
    assert torch.allclose(prediction_spec("edm", 1.0).target(x0, eps, a, sg), -v_target(x0, eps, a, sg), atol=1e-12)


def test_uncertainty_weight_divides_by_e_to_the_u_and_adds_u():
    s, x0, eps, t, edm = _per_sample(prediction="v", weighting="edm")
    u = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    seen = []

    def logvar(log_sigma):
        seen.append(log_sigma)
        return u

    _, _, _, _, loss = _per_sample(prediction="v", weighting="uncertainty", logvar=logvar)
    assert torch.allclose(loss, edm / u.exp() + u)
    assert torch.allclose(seen[0], (s.sigma[t] / s.alpha[t]).log().double())
    assert torch.equal(LogVar()(torch.linspace(-3, 3, 7)), torch.zeros(7))  # it starts at u = 0: EDM's weight


@pytest.mark.parametrize("extra", [
    ("diffusion.t_sampling='adaptive'", "diffusion.weighting='uncertainty'"),
    ("diffusion.t_sampling='laplace'", "diffusion.prediction='edm'", "diffusion.weighting='simple'"),
])
def test_the_levers_train_resume_bit_exactly_and_sample(tmp_path, extra):
    extra = ("train.ckpt_every=5", *extra)
    train(tiny_image_config("train.steps=12", *extra), tmp_path / "straight", **QUIET)
    train(tiny_image_config("train.steps=5", *extra), tmp_path / "split", **QUIET)
    train(tiny_image_config("train.steps=12", *extra), tmp_path / "split", resume=True, **QUIET)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "straight" / ckpt.MODEL), load_file(tmp_path / "split" / ckpt.MODEL)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = ckpt.load_state(tmp_path / "straight"), ckpt.load_state(tmp_path / "split")
    if "adaptive" in extra[1]:
        assert torch.equal(sa["adaptive_t"]["mean_sq"], sb["adaptive_t"]["mean_sq"])
        assert int(sa["adaptive_t"]["seen"].sum()) == 12 * 16  # every sample of every step was folded in
        assert torch.equal(sa["logvar"]["linear.weight"], sb["logvar"]["linear.weight"])
        assert sa["logvar"]["linear.weight"].abs().max() > 0  # the learned weight moved off u = 0
    run = Run.load(tmp_path / "split", device="cpu")
    x = sample(run, 4)
    assert x.shape == (4, *run.item_shape) and torch.isfinite(x).all() and x.abs().max() <= 1.0


@pytest.mark.parametrize("setting, owner", [
    ("diffusion.t_loc=1.0", "t_sampling"), ("diffusion.t_scale=1.0", "t_sampling"),
    ("diffusion.sigma_data=1.0", "diffusion.weighting"), ("diffusion.min_snr_gamma=2.0", "min-snr"),
])
def test_a_setting_of_a_choice_not_taken_is_refused(setting, owner):
    overrides = [setting] if "min_snr" not in setting else [setting, "diffusion.weighting='edm'"]
    with pytest.raises(ConfigError, match=owner):
        build_config("mnist", None, overrides)
    with pytest.raises(ConfigError, match="diffusion.t_scale"):
        build_config("mnist", None, ["diffusion.t_sampling='laplace'", "diffusion.t_scale=0"])


def test_adam_beta2_reaches_the_optimizer():
    from ddpmlab.optim import make_optimizer

    tc = build_config("mnist", None, ["train.adam_beta2=0.99"]).train
    opt = make_optimizer(torch.nn.Linear(2, 2), tc, torch.device("cpu"), extra=LogVar())
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == 6 + 129  # the linear layer and LogVar's
    with pytest.raises(ConfigError, match=r"train.adam_beta2 must lie in \[0, 1\)"):
        build_config("mnist", None, ["train.adam_beta2=1.0"])

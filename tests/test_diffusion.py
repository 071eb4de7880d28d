import pytest
import torch

from ddpmlab.diffusion import (
    eps_to_x0, q_posterior, q_sample, split_prediction, training_loss, v_target, v_to_x0_eps, x0_to_eps,
)
from ddpmlab.schedules import make_schedule


def test_q_sample_moments_match_closed_form():
    s = make_schedule("linear", 1000)
    x0 = torch.tensor([0.8, -0.3, 0.0])
    n = 200_000
    for t in (1, 250, 999):
        tt = torch.full((n,), t)
        xt = q_sample(s, x0.expand(n, 3), tt, torch.randn(n, 3))
        mean, var = xt.mean(0), xt.var(0)
        assert torch.allclose(mean, s.alpha[t].float() * x0, atol=0.01)
        assert torch.allclose(var, torch.full((3,), 1 - s.alpha_bar[t].item()), rtol=0.02, atol=2e-4)


@pytest.mark.parametrize("t,s_", [(5, 4), (400, 399), (900, 600), (50, 0)])
def test_posterior_equals_bayes_rule(t, s_):
    """q(x_s | x_t, x0) ∝ q(x_t | x_s) q(x_s | x0): both Gaussian, multiply numerically on a grid."""
    sched = make_schedule("cosine", 1000)
    x0 = torch.tensor([[0.7]], dtype=torch.float64)
    xt = torch.tensor([[0.2]], dtype=torch.float64)
    mean, var = q_posterior(sched, x0, xt, torch.tensor([t]), torch.tensor([s_]))
    ab = sched.alpha_bar
    if s_ == 0:  # q(x_0 | x_t, x0) is a point mass at x0
        assert mean.item() == pytest.approx(0.7) and var.item() == pytest.approx(0.0, abs=1e-12)
        return
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    a_ts = (ab[t] / ab[s_]).sqrt()
    log_lik = -0.5 * (xt.item() - a_ts * grid) ** 2 / (1 - ab[t] / ab[s_])
    log_prior = -0.5 * (grid - ab[s_].sqrt() * x0.item()) ** 2 / (1 - ab[s_])
    w = torch.exp(log_lik + log_prior - (log_lik + log_prior).max())
    w = w / w.sum()
    num_mean = (w * grid).sum()
    num_var = (w * (grid - num_mean) ** 2).sum()
    assert mean.item() == pytest.approx(num_mean.item(), abs=1e-6)
    assert var.item() == pytest.approx(num_var.item(), rel=1e-4)


def test_prediction_conversions_invert_exactly():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randn(16, 3, generator=g, dtype=torch.float64)
    s = make_schedule("cosine", 1000)
    t = torch.randint(1, 1000, (16,), generator=g)
    alpha, sigma = s.at(s.alpha, t, x0), s.at(s.sigma, t, x0)
    xt = alpha * x0 + sigma * eps
    assert torch.allclose(eps_to_x0(xt, eps, alpha, sigma), x0, atol=1e-9)
    assert torch.allclose(x0_to_eps(xt, x0, alpha, sigma), eps, atol=1e-9)
    x0_v, eps_v = v_to_x0_eps(xt, v_target(x0, eps, alpha, sigma), alpha, sigma)
    assert torch.allclose(x0_v, x0, atol=1e-12) and torch.allclose(eps_v, eps, atol=1e-12)
    for kind, out in (("eps", eps), ("x0", x0), ("v", v_target(x0, eps, alpha, sigma))):
        d = split_prediction(kind, out, xt, alpha, sigma)
        assert torch.allclose(d.x0, x0, atol=1e-9) and torch.allclose(d.eps, eps, atol=1e-9)


def test_min_snr_weight_for_eps_target():
    """A model that outputs zeros has per-sample eps loss mean(eps^2); min-SNR scales it by min(snr, g)/snr."""
    s = make_schedule("cosine", 1000)
    zero = lambda x, t, y=None: torch.zeros_like(x)
    x0 = torch.randn(4, 8, dtype=torch.float64)
    eps = torch.randn(4, 8, dtype=torch.float64)
    t = torch.tensor([10, 100, 500, 900])
    simple = training_loss(zero, s, x0, t, eps)
    assert simple.item() == pytest.approx(eps.pow(2).mean().item())
    weighted = training_loss(zero, s, x0, t, eps, weighting="min-snr", min_snr_gamma=5.0)
    snr = s.alpha_bar[t] / (1 - s.alpha_bar[t])
    expected = (snr.clamp(max=5.0) / snr * eps.pow(2).mean(1)).mean()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)

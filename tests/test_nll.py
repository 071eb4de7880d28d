"""Bits/dim from the variational bound (metrics/nll.py)."""

import math

import pytest
import torch

from ddpmlab.metrics.nll import discretized_gaussian_nll, model_variance, nll_bits_per_dim, quantize
from ddpmlab.samplers.oracle import GaussianMixture, oracle_denoiser
from ddpmlab.schedules import make_schedule


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


def _bound_terms(sched, variance, mu, s):
    """Expected bound terms in nats per dimension for x0 ~ N(mu, s^2) with the exact denoiser (see below)."""
    ab, betas = sched.alpha_bar, sched.betas
    var_p = model_variance(sched, variance)
    total = 0.0
    for t in range(2, sched.T + 1):
        post = float(betas[t] * (1 - ab[t - 1]) / (1 - ab[t]))
        c = float(ab[t - 1].sqrt() * betas[t] / (1 - ab[t]))
        a2, s2 = float(ab[t]), float(1 - ab[t])
        v_post = s * s * s2 / (a2 * s * s + s2)  # Var(x0 | x_t) for a Gaussian prior
        vp = float(var_p[t])
        total += 0.5 * (math.log(vp / post) + post / vp - 1) + c * c * v_post / (2 * vp)
    return total


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_bits_per_dim_matches_the_analytic_bound_for_gaussian_data(variance):
    """Gaussian data x0 ~ N(mu, s^2 I) in D dims, scored with its exact denoiser E[x0 | x_t].

    Derivation. q(x_t | x0) = N(alpha_t x0, sigma_t^2 I), so x0 | x_t is Gaussian with variance
    V_t = s^2 sigma_t^2 / (alpha_t^2 s^2 + sigma_t^2) per dimension. The model's mean is the posterior mean
    through x0_hat = E[x0 | x_t]: mu_theta - mu_tilde = c_t (x0_hat - x0), c_t = sqrt(alpha_bar_{t-1}) beta_t /
    (1 - alpha_bar_t) (Ho et al. eq. 7). With model variance v_t and posterior variance beta_tilde_t:
        E L_{t-1} = D/2 [log(v_t / beta_tilde_t) + beta_tilde_t / v_t - 1] + D c_t^2 V_t / (2 v_t),
    (the first bracket is 0 for v_t = beta_tilde_t). L_T = KL(N(alpha_T x0, sigma_T^2) || N(0, 1)) =
    1/2 sum_i (alpha_T^2 x0_i^2 + sigma_T^2 - 1 - log sigma_T^2) is checked exactly on the (quantized) data.
    The data are snapped to the 8-bit grid, which changes their variance by (2/255)^2/12 ~ 5e-6: negligible.
    """
    sched = make_schedule("linear", 50)
    D, N, mu, s = 16, 300, 0.2, 0.3
    g = torch.Generator().manual_seed(8)
    x0 = (mu + s * torch.randn(N, D, generator=g, dtype=torch.float64)).clamp(-1, 1)
    mix = GaussianMixture(torch.full((1, D), mu, dtype=torch.float64), torch.tensor([s]), torch.ones(1))
    res = nll_bits_per_dim(oracle_denoiser(mix, sched), sched, x0, variance=variance, generator=g)
    expected_diffusion = _bound_terms(sched, variance, mu, s) / math.log(2)  # nats/dim -> bits/dim
    assert float(res.diffusion.mean()) == pytest.approx(expected_diffusion, rel=0.03)
    xq = quantize(x0)
    aT2, sT2 = float(sched.alpha_bar[-1]), float(1 - sched.alpha_bar[-1])
    prior = 0.5 * (aT2 * xq.pow(2) + sT2 - 1 - math.log(sT2)).sum(1) / (D * math.log(2))
    assert torch.allclose(res.prior, prior, rtol=1e-9, atol=1e-12)
    assert torch.allclose(res.bpd, res.prior + res.diffusion + res.decoder)
    # the stratified estimator is unbiased: with 10 strata its mean lands on the same value
    strat = nll_bits_per_dim(oracle_denoiser(mix, sched), sched, x0, variance=variance, timesteps=10, generator=g)
    assert float(strat.diffusion.mean()) == pytest.approx(expected_diffusion, rel=0.08)
    assert strat.evaluations == 11 and res.evaluations == 50


def test_bits_per_dim_of_a_point_mass_is_exact():
    """x0 = c on the grid and the exact denoiser (x0_hat = c): every KL term is 0 with v_t = beta_tilde_t, so

    bits/dim = [L_T + L_0] / (D ln 2), L_0 = -D log(Phi(d / sigma_1) - Phi(-d / sigma_1)), d = 1/255, sigma_1^2 =
    beta_tilde_2 for an interior c, and -D log Phi(d / sigma_1) at the edge c = -1 (its bin reaches -inf).
    """
    from scipy.stats import norm

    sched = make_schedule("cosine", 40)
    D = 8
    for c in (quantize(torch.tensor(0.2, dtype=torch.float64)).item(), -1.0):
        x0 = torch.full((3, D), c, dtype=torch.float64)
        mix = GaussianMixture(torch.full((1, D), c, dtype=torch.float64), torch.tensor([0.0]), torch.ones(1))
        res = nll_bits_per_dim(oracle_denoiser(mix, sched), sched, x0)
        sigma1 = math.sqrt(float(model_variance(sched, "posterior")[1]))
        mass = norm.cdf(1 / 255 / sigma1) - (norm.cdf(-1 / 255 / sigma1) if c > -1 else 0.0)
        aT2, sT2 = float(sched.alpha_bar[-1]), float(1 - sched.alpha_bar[-1])
        prior = 0.5 * (aT2 * c * c + sT2 - 1 - math.log(sT2))
        expected = (prior - math.log(mass)) / math.log(2)
        assert torch.allclose(res.diffusion, torch.zeros(3, dtype=torch.float64), atol=1e-9)
        assert torch.allclose(res.bpd, torch.full((3,), expected, dtype=torch.float64), rtol=1e-9)


def test_discretized_decoder_is_stable_in_the_tails():
    x = torch.tensor([[-1.0, 1.0, 0.0, 0.5]], dtype=torch.float64)
    far = discretized_gaussian_nll(x, torch.tensor([[0.9, -0.9, 0.9, -0.9]], dtype=torch.float64),
                                   torch.full((1, 1), 1e-6, dtype=torch.float64))
    assert torch.isfinite(far).all() and far.item() > 1e4

"""Metrics: analytic values, reference agreement and sanity checks (ddpmlab.metrics)."""

import math

import numpy as np
import pytest
import torch

from ddpmlab.config import DataConfig
from ddpmlab.data import DEBIAN_FASHION_MNIST, load_dataset, toy_points
from ddpmlab.errors import ConfigError
from ddpmlab.metrics.accuracy import class_accuracy
from ddpmlab.metrics.features import load_classifier, mnist_5k_heldout, select_features
from ddpmlab.metrics.frechet import feature_stats, fid_from_features, frechet_distance
from ddpmlab.metrics.kid import kid, mmd2_unbiased
from ddpmlab.metrics.nll import discretized_gaussian_nll, model_variance, nll_bits_per_dim, quantize
from ddpmlab.metrics.precision_recall import precision_recall
from ddpmlab.metrics.toy import energy_distance, gmm8_means, mode_coverage, sliced_wasserstein
from ddpmlab.samplers.oracle import GaussianMixture, oracle_denoiser
from ddpmlab.schedules import make_schedule


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(DataConfig(name="mnist-5k"))


@pytest.fixture(scope="module")
def mnist_features(mnist):
    """Features of 1000 even- and 1000 odd-indexed images (disjoint; random, since mnist-5k is sorted by label)."""
    pick = torch.randperm(2500, generator=torch.Generator().manual_seed(0))[:1000]
    return select_features("mnist-5k", (1, 28, 28))(torch.cat([mnist.x[0::2][pick], mnist.x[1::2][pick]]))


# ---------------------------------------------------------------- Frechet distance


def test_fid_of_identical_sets_is_zero():
    phi = torch.randn(500, 16, generator=torch.Generator().manual_seed(1))
    assert fid_from_features(phi, phi) == pytest.approx(0.0, abs=1e-8)


def test_frechet_matches_closed_form_for_diagonal_covariances():
    """For diagonal S1 = diag(a), S2 = diag(b): d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    a, b = rng.uniform(0.1, 3.0, 32), rng.uniform(0.1, 3.0, 32)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-10)


def test_frechet_matches_a_float64_eigen_reference_for_full_covariances():
    """tr sqrt(S1 S2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))) (a symmetric PSD matrix), computed with scipy.linalg.eigh."""
    from scipy import linalg

    rng = np.random.default_rng(1)
    d = 24
    A, B = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = A @ A.T / d + 0.1 * np.eye(d), B @ B.T / d + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    w, v = linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    tr_root = np.sqrt(np.clip(linalg.eigh(root1 @ s2 @ root1, eigvals_only=True), 0, None)).sum()
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_root
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-9)


def test_fid_of_samples_approaches_the_gaussian_distance():
    """Samples of N(mu_i, diag(a_i)): the sample FID converges to the closed form (bias ~ d / N)."""
    g = torch.Generator().manual_seed(2)
    d, n = 8, 20000
    a, b = torch.linspace(0.5, 2.0, d, dtype=torch.float64), torch.linspace(2.0, 0.5, d, dtype=torch.float64)
    mu2 = torch.full((d,), 0.3, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * a.sqrt()
    y = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) * b.sqrt()
    exact = float(mu2.pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert fid_from_features(x, y) == pytest.approx(exact, rel=0.05)


def test_fid_survives_singular_covariances():
    """Fewer samples than dimensions: S is singular, the eps offset makes the root usable."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(10, 32, generator=g), torch.randn(10, 32, generator=g) + 1.0
    mu_a, s_a = feature_stats(a)
    assert np.linalg.matrix_rank(s_a) < 32
    value = fid_from_features(a, b)
    assert math.isfinite(value) and value > 20  # |mu difference|^2 alone is about 32


def test_fid_real_splits_small_noise_large(mnist, mnist_features):
    even, odd = mnist_features[:1000], mnist_features[1000:]
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    phi_noise = select_features("mnist-5k", (1, 28, 28))(noise)
    real = fid_from_features(even, odd)
    assert real < 5.0
    assert fid_from_features(phi_noise, odd) > 50 * real


# ---------------------------------------------------------------- KID


def test_mmd2_matches_the_naive_double_sum():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(9, 3, generator=g, dtype=torch.float64)

    def k(u, v):
        return (float(u @ v) / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_unbiased_for_equal_distributions():
    """Two independent samples of one law: the mean of MMD^2_u over many draws is 0 within its standard error."""
    g = torch.Generator().manual_seed(5)
    values = torch.tensor([mmd2_unbiased(torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g))
                           for _ in range(300)])
    stderr = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean())) < 3 * stderr
    shifted = torch.randn(400, 16, generator=g) + 0.5
    k_mean, k_std = kid(torch.randn(400, 16, generator=g), shifted, subsets=20, subset_size=200)
    assert k_mean > 10 * stderr and k_std > 0


# ---------------------------------------------------------------- precision and recall


def test_precision_recall_same_distribution_high_disjoint_zero():
    g = torch.Generator().manual_seed(6)
    real, gen = torch.randn(1000, 8, generator=g), torch.randn(1000, 8, generator=g)
    p, r = precision_recall(real, gen)
    assert p > 0.7 and r > 0.7
    p, r = precision_recall(real, gen + 50.0)
    assert p == 0.0 and r == 0.0


def test_precision_recall_detect_mode_dropping():
    """Samples from one of two well-separated real clusters: realistic (precision ~1) but half the data (recall ~0.5)."""
    g = torch.Generator().manual_seed(7)
    centres = torch.tensor([[-10.0] * 4, [10.0] * 4])
    real = torch.randn(1000, 4, generator=g) + centres[torch.arange(1000) % 2]
    gen = torch.randn(1000, 4, generator=g) + centres[0]
    p, r = precision_recall(real, gen)
    assert p > 0.9 and 0.4 < r < 0.55


# ---------------------------------------------------------------- exact 2D metrics


def test_energy_distance_moved_but_still_importable_from_the_oracle():
    from ddpmlab.samplers import oracle

    assert oracle.energy_distance is energy_distance


def test_sliced_wasserstein_of_a_shift_is_its_length_over_sqrt2():
    """Shifting by c moves every projection by theta . c, so SW_2^2 = mean_theta (theta . c)^2 = |c|^2 / 2."""
    a = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.tensor([0.3, -0.4], dtype=torch.float64)
    assert sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(a, a + c) == pytest.approx(0.5 / math.sqrt(2), rel=1e-9)
    b = torch.randn(700, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert sliced_wasserstein(a, b) < 0.1 < sliced_wasserstein(a, b + c)  # unequal sizes work too


def test_gmm8_mode_coverage():
    """True gmm8 points: all 8 modes, ~98.9% within 3 std (chi^2_2: 1 - exp(-4.5)); half the modes: 4 of 8."""
    pts, labels = toy_points("gmm8", 4000, seed=3)
    full = mode_coverage(pts)
    assert full["modes_covered"] == 8 and full["high_quality"] > 0.97
    assert torch.allclose(gmm8_means()[labels].float(), pts, atol=0.6)
    half = mode_coverage(pts[labels < 4])
    assert half["modes_covered"] == 4 and half["mode_fraction"] == 0.5
    assert mode_coverage(torch.zeros(100, 2))["high_quality"] == 0.0


# ---------------------------------------------------------------- bits/dim


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


# ---------------------------------------------------------------- feature extractors and classifiers


def test_mnist_classifier_is_accurate_on_its_held_out_images(mnist):
    net, meta = load_classifier("mnist")
    held = mnist_5k_heldout(mnist.y)
    assert int(held.sum()) == 1000 and torch.bincount(mnist.y[held]).tolist() == [100] * 10
    with torch.no_grad():
        acc = class_accuracy(net(mnist.x[held]), mnist.y[held], 10)
    assert acc["accuracy"] > 0.95
    assert float(meta["test_accuracy"]) == pytest.approx(acc["accuracy"], abs=1e-4)



@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_shipped_weights_are_small_and_byte_reproducible(name):
    """Under 2 MB, and the safetensors header is JSON with sorted keys (what benchmarks/train_classifier.py
    writes, so that equal weights give equal bytes whatever order safetensors' hash map chose)."""
    import json
    import struct

    from ddpmlab.metrics.features import weights_path

    blob = weights_path(name).read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = blob[8 : 8 + n].rstrip(b" ")
    assert len(blob) < 2e6
    assert header == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":")).encode()
    meta = json.loads(header)["__metadata__"]
    assert meta["dataset"] == name and json.loads(meta["settings"])["seed"] == 0


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_classifier_is_accurate_on_the_test_split():
    test = load_dataset(DataConfig(name="fashion-mnist"), "test")
    net, meta = load_classifier("fashion-mnist")
    with torch.no_grad():
        acc = class_accuracy(net(test.x[:2000]), test.y[:2000], 10)["accuracy"]
    assert acc > 0.88 and float(meta["test_accuracy"]) > 0.9


def test_classifier_features_have_unit_scale_on_real_data(mnist_features):
    assert mnist_features.shape == (2000, 128)
    assert 0.7 < float(mnist_features.var(0).mean()) < 1.3


def test_class_accuracy_per_class():
    logits = torch.eye(3)[[0, 1, 2, 2]]
    acc = class_accuracy(logits, torch.tensor([0, 1, 1, 2]), 4)
    assert acc["accuracy"] == 0.75 and acc["per_class"] == [1.0, 0.5, 1.0, None]


def test_inception_loads_a_user_state_dict(tmp_path):
    """A randomly initialised inception_v3 saved as safetensors loads and gives 2048-d features of any image."""
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False)  # the aux head is ignored on load
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "inc.safetensors"))
    phi = select_features("mnist-5k", (1, 28, 28), "auto", tmp_path / "inc.safetensors")  # weights given: Inception
    feats = phi(torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert phi.comparable and phi.key.startswith("inception-")
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="not an Inception-v3 state dict"):
        select_features("cifar10", (3, 32, 32), "inception", tmp_path / "other.safetensors")


def test_pth_state_dicts_load_only_through_the_safe_loader(tmp_path):
    from ddpmlab.metrics.features import load_state_dict_file

    sd = {"a.weight": torch.ones(2, 2)}
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "nested.pt")
    assert torch.equal(load_state_dict_file(tmp_path / "plain.pth")["a.weight"], sd["a.weight"])
    assert set(load_state_dict_file(tmp_path / "nested.pt")) == {"a.weight"}
    torch.save({"evil": ExecOnLoad()}, tmp_path / "evil.pth")
    for bad in ("evil.pth", "missing.pth"):
        with pytest.raises(ConfigError):
            load_state_dict_file(tmp_path / bad)
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match="safetensors, .pth or .pt"):
        load_state_dict_file(tmp_path / "w.ckpt")


class ExecOnLoad:
    """A pickle that would run code when unpickled by an unsafe loader."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('unsafe load')",))


def test_feature_selection_fallbacks():
    pixels = select_features("cifar10", (3, 32, 32))
    assert pixels.key.startswith("pixels") and not pixels.comparable
    assert pixels(torch.zeros(4, 3, 64, 64)).shape == (4, 256)
    with pytest.raises(ConfigError, match="inception-weights"):
        select_features("cifar10", (3, 32, 32), "inception")
    with pytest.raises(ConfigError, match="no shipped classifier"):
        select_features("cifar10", (3, 32, 32), "classifier")
    assert select_features("fashion-mnist", (1, 28, 28)).key.startswith("classifier-fashion-mnist")

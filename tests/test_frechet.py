"""Frechet distance and FID (metrics/frechet.py)."""

import math

import numpy as np
import pytest
import torch

from ddpmlab.metrics.features import select_features
from ddpmlab.metrics.frechet import feature_stats, fid_from_features, frechet_distance


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


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

"""Kernel inception distance (metrics/kid.py)."""

import math

import pytest
import torch

from ddpmlab.metrics.kid import kid, mmd2_unbiased


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


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

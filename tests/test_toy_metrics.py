"""Exact 2D metrics: energy distance, sliced Wasserstein, mode coverage (metrics/toy.py)."""

import math

import pytest
import torch

from ddpmlab.data import toy_points
from ddpmlab.metrics.toy import energy_distance, gmm8_means, mode_coverage, sliced_wasserstein


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


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

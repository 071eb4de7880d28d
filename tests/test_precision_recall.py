"""Precision and recall of generated sets (metrics/precision_recall.py)."""

import torch
import pytest

from ddpmlab.metrics.precision_recall import precision_recall


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


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

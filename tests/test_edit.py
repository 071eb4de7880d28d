"""The editing algorithms (edit.py) on their own: RePaint's schedule, spherical interpolation, and the edit jobs'
refusal of 2D runs. The commands end to end are in test_edit_cli.py."""

import math

import pytest
import torch

from ddpmlab.edit import picture_for, repaint_path, slerp
from ddpmlab.errors import ConfigError


def test_repaint_without_resampling_is_the_plain_reverse_chain():
    assert repaint_path(6, 2, 1) == list(range(7))


def test_repaint_path_ends_at_the_clean_end_and_never_leaves_the_grid():
    path = repaint_path(20, 5, 3)
    assert path[0] == 0 and path[-1] == 20 and all(0 <= i <= 20 for i in path)
    assert all(abs(b - a) == 1 for a, b in zip(path[:-1], path[1:]))  # one step at a time, down or up


def test_slerp_keeps_the_norm_of_gaussian_noise_and_hits_both_ends():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 1, 28, 28, generator=g), torch.randn(1, 1, 28, 28, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert mid.norm().item() == pytest.approx(math.sqrt(28 * 28), rel=0.08)  # a straight line would shrink it
    assert (0.5 * (a + b)).norm().item() < 0.8 * mid.norm().item()


def test_editing_a_2d_run_is_refused_with_the_reason():
    from types import SimpleNamespace

    run = SimpleNamespace(is_image=False, path="runs/moons")
    with pytest.raises(ConfigError, match="editing needs an image run"):
        picture_for(run, "x.png")

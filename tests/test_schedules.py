import math

import pytest
import torch

from ddpmlab.schedules import SCHEDULES, make_schedule, spaced_timesteps


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("T", [30, 100, 1000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(name, T):
    s = make_schedule(name, T)
    ab = s.alpha_bar
    assert ab.dtype == torch.float64 and ab.shape == (T + 1,)
    assert ab[0] == 1.0
    assert torch.all(ab[1:] < ab[:-1])
    assert torch.all(ab > 0) and torch.all(ab <= 1)
    assert torch.all(s.betas[1:] > 0) and torch.all(s.betas <= 0.999)


def test_cosine_endpoints():
    s = make_schedule("cosine", 1000)
    # alpha_bar_1 is close to 1 (beta_1 tiny) and alpha_bar_T is ~0: beta_T hits the 0.999 clip.
    assert 0.9999 < s.alpha_bar[1] < 1.0
    assert s.alpha_bar[-1] < 1e-6
    assert s.betas[-1] == pytest.approx(0.999)
    # f(t)/f(0) at the middle, recomputed from the formula
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert s.alpha_bar[500].item() == pytest.approx(f(500) / f(0), rel=1e-9)


def test_linear_matches_linspace_at_T_1000():
    s = make_schedule("linear", 1000)
    assert torch.allclose(s.betas[1:], torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))


def test_linear_rescales_for_other_T_unless_endpoints_given():
    s = make_schedule("linear", 100)
    assert s.betas[1].item() == pytest.approx(1e-3) and s.betas[-1].item() == pytest.approx(0.2)
    raw = make_schedule("linear", 200, beta_start=1e-4, beta_end=0.02)
    assert torch.allclose(raw.betas[1:], torch.linspace(1e-4, 0.02, 200, dtype=torch.float64))


def test_geometric_equals_a_to_the_t():
    s = make_schedule("geometric", 30, a=0.9)
    t = torch.arange(31, dtype=torch.float64)
    assert torch.allclose(s.alpha_bar, 0.9**t, rtol=1e-12)


def test_log_snr_matches_alpha_bar():
    s = make_schedule("sigmoid", 500)
    ab = s.alpha_bar[1:]
    assert torch.allclose(s.log_snr[1:], torch.log(ab / (1 - ab)))
    assert torch.all(s.log_snr[2:] < s.log_snr[1:-1])


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match="cosine"):
        make_schedule("nope", 10)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "quadratic", "karras"])
def test_spaced_timesteps_are_decreasing_and_in_range(spacing):
    s = make_schedule("cosine", 1000)
    ts = spaced_timesteps(s, 20, spacing)
    assert torch.all(ts[1:] < ts[:-1])
    assert ts.min() >= 1 and ts.max() <= 1000
    assert 15 <= len(ts) <= 20  # karras may merge neighbours that round to the same t


def test_trailing_starts_at_T_and_full_steps_is_every_t():
    s = make_schedule("linear", 1000)
    assert spaced_timesteps(s, 10, "trailing")[0] == 1000
    assert torch.equal(spaced_timesteps(s, 1000, "trailing"), torch.arange(1000, 0, -1))
    with pytest.raises(ValueError):
        spaced_timesteps(s, 1001)


@pytest.mark.parametrize("T", [10, 15, 19, 20])
def test_rescaled_linear_schedule_is_refused_where_beta_reaches_1(T):
    from ddpmlab.config import build_config
    from ddpmlab.errors import ConfigError

    with pytest.raises(ValueError, match="must be below 1"):
        make_schedule("linear", T)
    with pytest.raises(ConfigError, match="use diffusion.T >= 21"):
        build_config("moons", overrides=[f"diffusion.T={T}", f"sample.steps={T}"])


def test_explicit_beta_end_of_1_is_refused_and_21_steps_work():
    with pytest.raises(ValueError, match="must be below 1"):
        make_schedule("linear", 100, beta_start=1e-4, beta_end=1.0)
    s = make_schedule("linear", 21)
    assert 0 < s.alpha_bar[-1] < 1 and torch.isfinite(s.log_snr[1:]).all()


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("T", [21, 50, 1000, 4000])
def test_every_schedule_ends_inside_the_unit_interval_with_finite_log_snr(name, T):
    s = make_schedule(name, T, **({"a": 0.99} if name == "geometric" else {}))
    assert 0 < s.alpha_bar[-1].item() < 1
    assert torch.isfinite(s.log_snr[1:]).all()


def test_geometric_underflow_is_refused():
    with pytest.raises(ValueError, match="alpha_bar_T"):
        make_schedule("geometric", 10000, a=0.9)


def test_a_parameter_the_schedule_does_not_take_is_refused():
    with pytest.raises(ValueError, match="cosine schedule takes no a"):
        make_schedule("cosine", 100, a=0.99)

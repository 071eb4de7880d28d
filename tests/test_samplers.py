"""Samplers checked against the exact Gaussian-mixture denoiser, against each other, and against diffusers.

The oracle (samplers/oracle.py) is the Bayes-optimal denoiser of an 8-component 2D mixture, so any
error here is the sampler's own discretisation error, never a network's.
"""

import math

import pytest
import torch

from ddpmlab.diffusion import make_denoiser
from ddpmlab.models import MLP, MLPConfig
from ddpmlab.samplers import DEFAULT_SPACING, SAMPLERS, ddim_invert, resolve_spacing, sample_ddim, sample_ddpm
from ddpmlab.samplers import sample_dpmpp_2m, sample_dpmpp_3m, steps_warning
from ddpmlab.samplers import sample_euler, sample_heun
from ddpmlab.samplers.common import step_pairs
from ddpmlab.samplers.karras import heun_evaluations
from ddpmlab.samplers.oracle import GaussianMixture, energy_distance, oracle_denoiser
from ddpmlab.samplers.unipc import sample_unipc
from ddpmlab.schedules import Schedule, karras_sigmas, logsnr_window, make_schedule, spaced_timesteps

MIX = GaussianMixture.ring(k=8, radius=2.0, std=0.15)
SCHED = make_schedule("linear", 1000)
ORACLE = oracle_denoiser(MIX, SCHED)


# These tensors are tiny (a few thousand 2D points): with 2 threads every op pays a thread
# wake-up that costs more than the work (10x slower on a busy 2-core machine).
pytestmark = pytest.mark.usefixtures("one_thread")


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_oracle_is_the_exact_posterior_mean():
    t = torch.full((4000,), 300, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    x0, eps = MIX.sample(4000, g), _noise(4000, 1)
    alpha, sigma = SCHED.at(SCHED.alpha, t, x0), SCHED.at(SCHED.sigma, t, x0)
    x_t = alpha * x0 + sigma * eps
    x0_hat, eps_hat = ORACLE(x_t, t)
    assert torch.allclose(alpha * x0_hat + sigma * eps_hat, x_t, atol=1e-12)  # a consistent (x0, eps) pair
    # Orthogonality principle: the error of E[x0 | x_t] is uncorrelated with any function of x_t.
    resid = x0 - x0_hat
    for h in (x_t, x0_hat, torch.tanh(x_t)):
        assert (resid * h).mean(0).abs().max() < 4 * (resid * h).std(0).max() / math.sqrt(4000)
    # One component reduces to the Gaussian formula mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu).
    one = GaussianMixture(torch.tensor([[1.0, -0.5]]), torch.tensor([0.3]), torch.tensor([1.0]))
    gauss = one.means + alpha * 0.09 / (alpha**2 * 0.09 + sigma**2) * (x_t - alpha * one.means)
    assert torch.allclose(oracle_denoiser(one, SCHED)(x_t, t).x0, gauss, atol=1e-12)


def test_energy_distance_is_a_v_statistic():
    a, b = MIX.sample(500, torch.Generator().manual_seed(0)), MIX.sample(700, torch.Generator().manual_seed(1))
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(a, b) == pytest.approx(energy_distance(b, a), abs=1e-12)
    assert energy_distance(a, b) > 0
    assert energy_distance(a, b + 0.5) > 10 * energy_distance(a, b)


N_ED, REPEATS = 2000, 4
QUALITY_CASES = [("ddpm", 100), ("ddim", 50), ("dpmpp-2m", 20), ("dpmpp-3m", 15), ("euler", 50), ("heun", 20)]


@pytest.fixture(scope="module")
def ed_floor() -> float:
    """E of the V-statistic for two independent real samples of size N: (2 / N) E|X - X'|, measured."""
    x = MIX.sample(N_ED, torch.Generator().manual_seed(1234))
    mean_pair_dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").sum().item() / (N_ED * (N_ED - 1))
    return 2.0 / N_ED * mean_pair_dist


def _mean_energy_distance(name: str | None, steps: int, spacing: str = "auto") -> float:
    """Energy distance to fresh mixture samples, averaged over REPEATS independent runs of N_ED points.

    Averaging matters: at N = 2000 a single V-statistic for equal laws scatters over roughly 0.3x-2x
    of its mean (component counts fluctuate multinomially), so one draw cannot resolve a 3x bound.
    """
    g = torch.Generator().manual_seed(7)
    total = 0.0
    for r in range(REPEATS):
        if name is None:
            out = MIX.sample(N_ED, g)
        else:
            ts = spaced_timesteps(SCHED, steps, resolve_spacing(name, spacing, steps, SCHED.T))
            out = SAMPLERS[name](ORACLE, _noise(N_ED, 100 + r), SCHED, ts, generator=g)
        total += energy_distance(out, MIX.sample(N_ED, g))
    return total / REPEATS


@pytest.mark.parametrize("name,steps", [(None, 0), *QUALITY_CASES])
def test_samples_match_the_mixture(name, steps, ed_floor):
    ratio = _mean_energy_distance(name, steps) / ed_floor
    assert ratio < 3.0, f"{name or 'real samples'} at {steps} steps: energy distance {ratio:.2f}x the floor"


def test_energy_distance_bound_has_teeth(ed_floor):
    # Euler with 10 karras steps visibly smears the modes; the same bound must reject it.
    assert _mean_energy_distance("euler", 10, "karras") / ed_floor > 3.0


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp-2m", "dpmpp-3m", "euler", "heun"])
def test_component_width_is_right_when_the_last_step_is_t1(name):
    # The energy distance barely sees the width of the modes, so check it directly: E[d^2] to the
    # nearest mean is 2 s^2 for the mixture. Karras spacing ends at t = 1 (sigma ~ 0.01 << s = 0.15).
    # (With "trailing" the last step denoises from t = T / steps, e.g. sigma ~ 0.17 at t = 50, and
    # that final x0 prediction shrinks each mode's variance by about s^2 / (s^2 + sigma^2).)
    steps = dict(QUALITY_CASES)[name]
    spacing = "logsnr" if name == "dpmpp-3m" else "karras"  # both end at t = 1; 3M takes karras' big steps badly
    out = SAMPLERS[name](ORACLE, _noise(4000, 5), SCHED, spaced_timesteps(SCHED, steps, spacing),
                         generator=torch.Generator().manual_seed(5))
    width = torch.cdist(out, MIX.means).min(1).values.pow(2).mean() / (2 * 0.15**2)
    assert 0.82 < width < 1.18


@pytest.fixture(scope="module")
def ode_reference():
    """Heun through all 1000 timesteps (1999 evaluations): the probability-flow ODE to about 1e-5."""
    x_T = _noise(500, 11)
    return x_T, sample_heun(ORACLE, x_T, SCHED, torch.arange(SCHED.T, 0, -1))


@pytest.mark.parametrize("name,order", [("ddim", 1), ("euler", 1), ("dpmpp-2m", 2), ("heun", 2), ("dpmpp-3m", 3)])
def test_convergence_order(name, order, ode_reference):
    # All four solve the same ODE, so one reference serves. Steps are Karras-placed for every
    # sampler: that spacing ends at t = 1 whatever the step count, so the last step (t = 1 -> 0,
    # where lambda = +inf and every solver is first order) is the same map in every run and in the
    # reference, and the errors measure the interior steps. With "trailing" spacing the last
    # step starts at t = T / steps, and its first-order error (~ sigma_{T/steps}^2 ~ 1 / steps)
    # holds DPM-Solver++ and Heun to slopes ~1.2 over 10..80 steps, so that spacing cannot show order 2.
    x_T, ref = ode_reference
    ns, errs = [], []
    for steps in (10, 20, 40, 80):
        ts = spaced_timesteps(SCHED, steps, "karras")  # 80 gives 79 distinct t (rounding near t = 1)
        out = SAMPLERS[name](ORACLE, x_T, SCHED, ts)
        ns.append(len(ts))
        errs.append((out - ref).norm(dim=1).mean().item())
    x, y = torch.tensor(ns, dtype=torch.float64).log(), torch.tensor(errs, dtype=torch.float64).log()
    slope = -(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).pow(2).sum()).item()
    last = -(y[-1] - y[-2]).item() / (x[-1] - x[-2]).item()  # the finest pair: closest to asymptotic
    if order == 1:
        assert 0.7 < slope < 1.5 and 0.8 < last < 1.3, (slope, last, errs)
    elif order == 2:
        assert 1.5 < slope < 3.0 and 1.6 < last < 2.6, (slope, last, errs)
    else:
        assert 2.4 < slope < 4.0, (slope, last, errs)


def test_euler_in_x_over_alpha_is_ddim():
    # DDIM's update is Euler's method in (sigma, x / alpha) (Song et al. 2021, eq. 13); any timesteps.
    ts = spaced_timesteps(SCHED, 15, "quadratic")
    x_T = _noise(300, 3)
    assert torch.allclose(sample_euler(ORACLE, x_T, SCHED, ts), sample_ddim(ORACLE, x_T, SCHED, ts), atol=1e-10)


def test_ddim_inversion_round_trip():
    x0 = MIX.sample(500, torch.Generator().manual_seed(2))
    errs = {}
    for steps in (100, 200):
        ts = spaced_timesteps(SCHED, steps, "trailing")
        x_T = ddim_invert(ORACLE, x0, SCHED, ts)
        assert x_T.std().item() == pytest.approx(1.0, abs=0.08)  # it really reached (near) pure noise
        errs[steps] = (sample_ddim(ORACLE, x_T, SCHED, ts) - x0).abs().mean().item()
    assert errs[200] < 1e-2
    assert 0.4 < errs[200] / errs[100] < 0.65  # first order: the round-trip error halves with twice the steps


def test_ddim_inversion_reaches_the_exact_ode_latent_of_a_gaussian():
    # For x0 ~ N(mu, s^2 I) the probability-flow ODE maps x0 to
    # x_T = alpha_T mu + sqrt(alpha_T^2 s^2 + sigma_T^2) (x0 - mu) / s (a straight line per sample),
    # so the latent of DDIM inversion can be checked against the closed form, not just the round trip.
    mu, s = torch.tensor([[0.6, -0.4]], dtype=torch.float64), 0.5
    gauss = GaussianMixture(mu, torch.tensor([s]), torch.ones(1))
    x0 = gauss.sample(2000, torch.Generator().manual_seed(3))
    a_T, s_T = SCHED.alpha[-1].item(), SCHED.sigma[-1].item()
    exact = a_T * mu + math.sqrt(a_T**2 * s**2 + s_T**2) * (x0 - mu) / s
    ts = spaced_timesteps(SCHED, 10, "trailing")
    latent = ddim_invert(oracle_denoiser(gauss, SCHED), x0, SCHED, ts)
    err = (latent - exact).abs()
    assert err.max().item() < 0.25, err.max().item()
    assert latent.std().item() == pytest.approx(exact.std().item(), rel=0.05)


def test_ddim_eta1_is_ddpm_with_posterior_variance():
    # Exact equality (to float64 rounding), not just in distribution: both draw one randn_like per
    # step except the last, in the same order, and sigma_eta^2 at eta = 1 is beta-tilde (DDIM eq. 16).
    ts = spaced_timesteps(SCHED, 30, "trailing")
    x_T = _noise(200, 4)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(200)]  # noqa: E731
    a = sample_ddim(ORACLE, x_T, SCHED, ts, eta=1.0, generator=gens())
    b = sample_ddpm(ORACLE, x_T, SCHED, ts, variance="posterior", generator=gens())
    assert torch.allclose(a, b, atol=1e-10)
    c = sample_ddim(ORACLE, x_T, SCHED, ts, eta=0.5, generator=gens())
    assert not torch.allclose(a, c, atol=1e-3)


STOCHASTIC = {"ddpm": {}, "ddim": {"eta": 0.7}, "heun": {"s_churn": 20.0}}


def _mlp_denoiser(schedule: Schedule, prediction: str):
    torch.manual_seed(0)
    net = MLP(MLPConfig(hidden=32, depth=2)).eval()
    return make_denoiser(net, schedule, prediction)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_for_every_sampler_and_prediction(name, prediction):
    sched = make_schedule("cosine", 100)
    inner = _mlp_denoiser(sched, prediction)
    calls = []

    def denoise(x_t, t):
        calls.append(int(t[0]))
        return inner(x_t, t)

    ts = spaced_timesteps(sched, 8, DEFAULT_SPACING[name])
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    seen = []
    out = SAMPLERS[name](denoise, x_T, sched, ts, generator=gens, callback=lambda i, t, x, x0: seen.append((i, t, x)),
                         **STOCHASTIC.get(name, {}))
    assert out.shape == x_T.shape and out.dtype == x_T.dtype and torch.isfinite(out).all()
    assert [i for i, _, _ in seen] == list(range(len(ts)))
    assert [t for _, t, _ in seen] == ts.tolist()[1:] + [0]
    assert torch.equal(seen[-1][2], out)
    assert len(calls) == (heun_evaluations(sched, ts) if name == "heun" else len(ts))
    if name != "heun":  # one evaluation per timestep, in order (heun's churn may move to a nearby t)
        assert calls == ts.tolist()


@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_per_sample_generators_make_each_sample_batch_independent(name):
    sched = make_schedule("cosine", 100)
    den = _mlp_denoiser(sched, "eps")
    ts = spaced_timesteps(sched, 10, DEFAULT_SPACING[name])
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))

    def run(x, seeds):
        return SAMPLERS[name](den, x, sched, ts, generator=[torch.Generator().manual_seed(s) for s in seeds],
                              **STOCHASTIC[name])

    full, part, other = run(x_T, range(6)), run(x_T[:3], range(3)), run(x_T, range(10, 16))
    assert torch.allclose(full[:3], part, atol=1e-6)
    assert not torch.allclose(full, other, atol=1e-3)  # the noise really comes from the generators


def test_step_pairs_walk_down_the_timesteps_and_end_at_zero():
    assert list(step_pairs(torch.tensor([9, 5, 2]))) == [(0, 9, 5), (1, 5, 2), (2, 2, 0)]
    assert list(step_pairs([1])) == [(0, 1, 0)]
    assert list(step_pairs([])) == []


def test_default_spacing_covers_every_sampler():
    assert set(DEFAULT_SPACING) == set(SAMPLERS)


def test_agrees_with_diffusers():
    diffusers = pytest.importorskip("diffusers")
    # Index conventions: diffusers' timestep k is our t = k + 1, and its alphas_cumprod[k] is our
    # alpha_bar[k + 1]; trained_betas = betas[1:] gives the same schedule (held in float32 there).

    def eps_model(x, k):
        return ORACLE(x, torch.full((x.shape[0],), int(k) + 1, dtype=torch.long)).eps

    def trajectory(sampler, x_T, ts, **kw):
        states = []
        sampler(ORACLE, x_T, SCHED, ts, callback=lambda i, t, x, x0: states.append(x), **kw)
        return states

    x_T = _noise(500, 9)
    betas = SCHED.betas[1:].numpy()

    # DDIM, 50 trailing steps. diffusers steps from k to k - T // steps, which is our next timestep
    # when steps divides T; set_alpha_to_one=True makes its last step go to alpha_bar = 1 (t = 0)
    # as ours does. Its step does no arithmetic of its own in float32, so with our float64 table
    # put in place of its float32 alphas_cumprod both sides agree to rounding, noise included.
    ts = spaced_timesteps(SCHED, 50, "trailing")
    for eta in (0.0, 1.0):
        ref = diffusers.DDIMScheduler(num_train_timesteps=1000, trained_betas=betas, timestep_spacing="trailing",
                                      set_alpha_to_one=True, clip_sample=False)
        ref.alphas_cumprod = SCHED.alpha_bar[1:].clone()
        ref.set_timesteps(50)
        assert torch.equal(ref.timesteps + 1, ts)
        g = torch.Generator().manual_seed(3)
        x, theirs = x_T.clone(), []
        for k in ref.timesteps:
            x = ref.step(eps_model(x, k), k, x, eta=eta, generator=g).prev_sample
            theirs.append(x)
        ours = trajectory(sample_ddim, x_T, ts, eta=eta, generator=torch.Generator().manual_seed(3))
        assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) < 1e-10

    # DPM-Solver++(2M), 20 trailing steps, given explicitly. final_sigmas_type="zero" makes its last
    # step first order to sigma = 0, as ours (lower_order_final adds nothing for order 2 and 20
    # steps). diffusers casts the state and its sigmas to float32 inside step(), so agreement is
    # float32's: our own solver run in float32 moves by a similar ~1e-5 at worst (mean ~1e-7).
    ts = spaced_timesteps(SCHED, 20, "trailing")
    ref = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=betas, solver_order=2,
                                                algorithm_type="dpmsolver++", solver_type="midpoint",
                                                final_sigmas_type="zero", lower_order_final=True)
    ref.set_timesteps(timesteps=(ts - 1).tolist())
    x, theirs = x_T.clone(), []
    for k in ref.timesteps:
        x = ref.step(eps_model(x, k), k, x).prev_sample
        theirs.append(x)
    ours = trajectory(sample_dpmpp_2m, x_T, ts)
    diffs = torch.stack([(a - b).abs().max() for a, b in zip(ours, theirs)])
    assert len(theirs) == len(ours) == 20
    assert diffs[:-1].max() < 1e-5 and diffs[-1] < 3e-5, diffs
    assert (ours[-1] - theirs[-1]).abs().mean() < 1e-6


def test_dpmpp_3m_agrees_with_diffusers_third_order_solver():
    diffusers = pytest.importorskip("diffusers")
    # Same conventions as test_agrees_with_diffusers: diffusers' k is our t = k + 1. Its multistep solver of
    # order 3 runs orders 1 and 2 on its first two steps, as ours does; final_sigmas_type="zero" with
    # lower_order_final makes its last step first order to sigma = 0, as ours.
    x_T = _noise(500, 9)
    ts = spaced_timesteps(SCHED, 20, "trailing")
    ref = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=SCHED.betas[1:].numpy(),
                                                solver_order=3, algorithm_type="dpmsolver++",
                                                final_sigmas_type="zero", lower_order_final=True)
    ref.set_timesteps(timesteps=(ts - 1).tolist())
    x, theirs = x_T.clone(), []
    for k in ref.timesteps:
        eps = ORACLE(x, torch.full((x.shape[0],), int(k) + 1, dtype=torch.long)).eps
        x = ref.step(eps, k, x).prev_sample
        theirs.append(x)
    ours = []
    sample_dpmpp_3m(ORACLE, x_T, SCHED, ts, callback=lambda i, t, x, x0: ours.append(x))
    diffs = torch.stack([(a - b).abs().max() for a, b in zip(ours, theirs)])
    assert len(theirs) == len(ours) == 20
    assert diffs[:-2].max() < 1e-4, diffs  # float32 inside diffusers' step()
    assert (ours[-1] - theirs[-1]).abs().mean() < 1e-4


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_auto_spacing_starts_at_T_and_keeps_the_full_chain(name):
    sched = make_schedule("cosine", 200)
    for steps in range(1, 61):
        ts = spaced_timesteps(sched, steps, resolve_spacing(name, "auto", steps, sched.T))
        assert int(ts[0]) == sched.T and torch.all(ts[1:] < ts[:-1])
    assert resolve_spacing(name, "auto", 200, 200) == "trailing"
    assert resolve_spacing(name, "karras", 5, 200) == "karras"  # an explicit choice is kept


def test_auto_spacing_follows_the_step_count():
    assert [resolve_spacing("dpmpp-2m", "auto", k, 1000) for k in (5, 8, 10, 20, 21, 50)] == [
        "logsnr-window", "rho-window", "logsnr-window", "logsnr-window", "logsnr", "logsnr"]
    assert [resolve_spacing("dpmpp-3m", "auto", k, 1000) for k in (5, 9, 10, 21, 50)] == [
        "rho-window", "trailing", "logsnr-window", "logsnr", "karras"]
    assert [resolve_spacing("unipc-3", "auto", k, 1000) for k in (5, 8, 10, 20, 31)] == [
        "logsnr-window", "rho-window", "logsnr-window", "logsnr-window", "logsnr"]
    assert [resolve_spacing("ddim", "auto", k, 1000) for k in (10, 11)] == ["trailing", "quadratic"]


def test_heun_survives_the_cosine_schedules_huge_first_sigma():
    # Cosine's sigma_T / alpha_T is ~2e4: a second-order correction across that first step multiplied the slope's
    # O(1) change by 2e4. Heun at 8 steps (15 NFE) must be about as close to the ODE as dpmpp-2m at 15 NFE.
    cos = make_schedule("cosine", 1000)
    oracle = oracle_denoiser(_narrow_unequal_offcentre(), cos)
    x_T = _noise(500, 4)
    exact = sample_dpmpp_3m(oracle, x_T, cos, spaced_timesteps(cos, 400, "logsnr"))
    heun = (sample_heun(oracle, x_T, cos, spaced_timesteps(cos, 8, "trailing")) - exact).norm(dim=1).mean().item()
    dpm = (sample_dpmpp_2m(oracle, x_T, cos, spaced_timesteps(cos, 15, "trailing")) - exact).norm(dim=1).mean().item()
    assert heun < 1.5 * dpm, (heun, dpm)
    assert heun_evaluations(cos, spaced_timesteps(cos, 8, "trailing")) == 14  # the first step is Euler there
    assert heun_evaluations(SCHED, spaced_timesteps(SCHED, 8, "trailing")) == 15


def _narrow_unequal_offcentre() -> GaussianMixture:
    means = torch.tensor([[2.1, -1.4], [0.2, 0.9], [1.5, 0.4], [-0.6, -1.0], [1.0, -2.2], [2.6, 0.7]])
    return GaussianMixture(means, torch.tensor([0.02, 0.05, 0.1, 0.03, 0.2, 0.08]),
                           torch.tensor([0.4, 0.05, 0.2, 0.1, 0.15, 0.1]))


def test_auto_dpmpp_at_10_nfe_is_no_worse_than_diffusers_default():
    # Narrow components of unequal weights and widths, off-centre: with karras spacing our dpmpp-2m was twice as far
    # from the exact ODE solution as diffusers' default DPM-Solver++(2M) at 10 NFE. The reference here is
    # dpmpp-3m through 400 logsnr steps (third order: converged far below these errors).
    diffusers = pytest.importorskip("diffusers")
    mix = _narrow_unequal_offcentre()
    oracle = oracle_denoiser(mix, SCHED)
    x_T = _noise(1000, 21)
    exact = sample_dpmpp_3m(oracle, x_T, SCHED, spaced_timesteps(SCHED, 400, "logsnr"))
    ref = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=SCHED.betas[1:].numpy())
    ref.set_timesteps(10)
    x = x_T.clone()
    for k in ref.timesteps:
        x = ref.step(oracle(x, torch.full((x.shape[0],), int(k) + 1, dtype=torch.long)).eps, k, x).prev_sample
    theirs = (x.double() - exact).norm(dim=1).mean().item()
    for name in ("dpmpp-2m", "dpmpp-3m"):
        ts = spaced_timesteps(SCHED, 10, resolve_spacing(name, "auto", 10, SCHED.T))
        ours = (SAMPLERS[name](oracle, x_T, SCHED, ts) - exact).norm(dim=1).mean().item()
        assert ours <= 1.03 * theirs, (name, ours, theirs)
    karras = (sample_dpmpp_2m(oracle, x_T, SCHED, spaced_timesteps(SCHED, 10, "karras")) - exact).norm(dim=1).mean()
    assert karras.item() > 1.3 * theirs  # the old default, for teeth


def test_heun_below_its_working_range_warns_with_the_step_count_it_needs():
    assert "use --steps 8 or more" in steps_warning("heun", 5)
    assert "9 evaluations" in steps_warning("heun", 5)
    assert steps_warning("heun", 8) == "" and steps_warning("dpmpp-2m", 3) == ""


@pytest.mark.parametrize("order,variant,spacing,steps", [(3, "bh2", "linspace", 10), (2, "bh2", "trailing", 20),
                                                         (2, "bh1", "leading", 8)])
def test_unipc_agrees_with_diffusers(order, variant, spacing, steps):
    diffusers = pytest.importorskip("diffusers")
    # diffusers' timestep k is our t = k + 1; its UniPC runs the same warm-up and lower orders at the end
    # (lower_order_final), and its last step goes to sigma = 0 ("zero") where it returns the x0 estimate, as ours.
    # It holds sigmas in float32, so agreement is float32's. With bh1 its last step is 0 * inf = nan (B(h) = -h is
    # infinite there), so that step is compared with our own x0 estimate instead.
    ref = diffusers.UniPCMultistepScheduler(num_train_timesteps=1000, trained_betas=SCHED.betas[1:].numpy(),
                                            solver_order=order, solver_type=variant, timestep_spacing=spacing)
    ref.set_timesteps(steps)
    x_T = _noise(500, 9)
    x, theirs = x_T.clone(), []
    for k in ref.timesteps:
        x = ref.step(ORACLE(x, torch.full((x.shape[0],), int(k) + 1, dtype=torch.long)).eps, k, x).prev_sample
        theirs.append(x)
    ours, x0s = [], []
    out = SAMPLERS[f"unipc-{order}"](ORACLE, x_T, SCHED, ref.timesteps + 1, variant=variant,
                                     callback=lambda i, t, x, x0: (ours.append(x), x0s.append(x0)))
    diffs = torch.stack([(a - b).abs().max() for a, b in zip(ours[:-1], theirs[:-1])])
    assert len(ours) == len(theirs) == steps and diffs.max() < 1e-5, diffs
    if variant == "bh2":
        assert (out - theirs[-1]).abs().max() < 1e-5
    assert torch.equal(out, x0s[-1])


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_order_is_one_above_its_predictor(order, ode_reference):
    # UniC-p raises UniP-p's order p to p + 1 (Zhao et al. 2023, Thm. 3.1) with no extra evaluation. Karras-placed
    # steps as in test_convergence_order, so the last step (t = 1 -> 0) is the same map in every run.
    x_T, ref = ode_reference
    ns, errs = [], []
    for steps in (10, 20, 40, 80):
        ts = spaced_timesteps(SCHED, steps, "karras")
        ns.append(len(ts))
        errs.append((sample_unipc(ORACLE, x_T, SCHED, ts, order=order) - ref).norm(dim=1).mean().item())
    x, y = torch.tensor(ns, dtype=torch.float64).log(), torch.tensor(errs, dtype=torch.float64).log()
    slope = -(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).pow(2).sum()).item()
    assert order + 0.6 < slope < order + 1.6, (slope, errs)


def test_unipc_refuses_an_order_or_variant_it_does_not_have():
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        sample_unipc(ORACLE, _noise(4, 0), SCHED, torch.tensor([1000, 500]), order=4)
    with pytest.raises(ValueError, match="'bh1' or 'bh2'"):
        sample_unipc(ORACLE, _noise(4, 0), SCHED, torch.tensor([1000, 500]), variant="bh3")


def _unipc3_error(mix: GaussianMixture, sched: Schedule, x_T: torch.Tensor, steps: int):
    """spacing -> mean L2 distance of unipc-3 with `steps` steps from the near-exact ODE solution (DPM-Solver++(3M),
    400 log-SNR-uniform steps) of the mixture's exact denoiser, from the same x_T."""
    oracle = oracle_denoiser(mix, sched)
    exact = sample_dpmpp_3m(oracle, x_T, sched, spaced_timesteps(sched, 400, "logsnr"))

    def error(spacing: str) -> float:
        out = sample_unipc(oracle, x_T, sched, spaced_timesteps(sched, steps, spacing), order=3)
        return float((out - exact).norm(dim=1).mean())

    return error


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_unipc3_auto_at_8_steps_beats_trailing_and_logsnr_window_on_the_wide_ring(schedule):
    # Third-order UniPC on the log-uniform window was 1.6x further from the exact ODE of the wide ring at 8 steps
    # than at 5; trailing (auto's earlier choice at 8) had twice rho-window's error. Auto now takes rho-window there.
    sched = make_schedule(schedule, 1000)
    error = _unipc3_error(GaussianMixture.ring(4, 1.5, 0.5), sched, _noise(400, 5), 8)
    auto = error(resolve_spacing("unipc-3", "auto", 8, sched.T))
    assert auto < 0.7 * error("trailing") and auto < 0.5 * error("logsnr-window")


def test_unipc3_auto_at_50_steps_handles_an_image_like_spread_of_scales_under_cosine():
    # A mixture with an image's spread over scales (per-axis spreads 9 / k along axis k of 64): quadratic levels, which
    # the six oracle mixtures chose for many steps, leave the coarse high-noise steps of the cosine schedule 5x further
    # from the exact ODE than levels uniform in log-SNR (1.84x diffusers' best on Fashion-MNIST's classes).
    g = torch.Generator().manual_seed(0)
    scale = 9.0 / torch.arange(1, 65, dtype=torch.float64)
    mix = GaussianMixture(torch.randn(4, 64, generator=g, dtype=torch.float64) * scale, 0.5 * scale.expand(4, 64),
                          torch.ones(4, dtype=torch.float64))
    sched = make_schedule("cosine", 1000)
    x_T = torch.randn(300, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    error = _unipc3_error(mix, sched, x_T, 50)
    assert error(resolve_spacing("unipc-3", "auto", 50, sched.T)) < 0.5 * error("quadratic")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_rho_window_spacing_follows_karras_eq5_with_negative_rho_over_the_window(schedule):
    sched = make_schedule(schedule, 1000)
    ve = sched.sigma / sched.alpha
    for steps in (5, 8, 20):
        ts = spaced_timesteps(sched, steps, "rho-window")
        lo, hi = logsnr_window(sched, steps)
        assert int(ts[0]) == sched.T and len(ts) == steps and torch.all(ts[1:] < ts[:-1])
        # every level after t = T is the t nearest (in log sigma) to Karras's eq. 5 with rho = -7 over the window
        target = karras_sigmas(lo, hi, steps, rho=-7.0)[1:].log()
        got = ve[ts[1:]].log()
        gap = (ve[1:].log() - ve[:-1].log())[ts[1:] - 1].abs()
        assert torch.all((got - target).abs() <= gap), (got, target)
        # after the first step (from t = T) its log-SNR steps shrink towards low noise; rounding to integer t
        # blurs that near t = 1 with many steps, so there only the first and last thirds are compared
        steps_log = -torch.diff(ve[ts[1:]].log())
        if steps <= 8:
            assert torch.all(steps_log[1:] < steps_log[:-1]), steps_log
        third = len(steps_log) // 3
        assert steps_log[-third:].mean() < 0.8 * steps_log[:third].mean(), steps_log  # logsnr-window: 1.0
        assert int(spaced_timesteps(sched, steps, "logsnr-window")[-1]) == int(ts[-1])  # the same bottom


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_logsnr_window_spacing_is_log_uniform_over_a_window_set_by_the_step_count(schedule):
    sched = make_schedule(schedule, 1000)
    ve = sched.sigma / sched.alpha  # sigma_t / alpha_t, indexed by t
    for steps in (5, 10, 20):
        ts = spaced_timesteps(sched, steps, "logsnr-window")
        lo, hi = logsnr_window(sched, steps)
        assert int(ts[0]) == sched.T and len(ts) == steps and torch.all(ts[1:] < ts[:-1])
        assert hi == min(80.0, float(ve[-1])) and lo == max(float(ve[1]), 4.0 / steps**2)
        # every level after t = T is the t nearest (in log sigma) to exp(linspace(log hi, log lo, steps))[i]
        target = torch.linspace(math.log(hi), math.log(lo), steps, dtype=torch.float64)[1:]
        got = ve[ts[1:]].log()
        gap = (ve[1:].log() - ve[:-1].log())[ts[1:] - 1].abs()  # one timestep's change of log sigma there
        assert torch.all((got - target).abs() <= gap), (got, target)
    # the bottom moves down with the step count until it reaches t = 1
    lasts = [int(spaced_timesteps(sched, s, "logsnr-window")[-1]) for s in (5, 8, 10, 15, 20, 40)]
    assert lasts == sorted(lasts, reverse=True) and lasts[0] > 30 and lasts[-1] == 1
    # with many steps the window is logsnr's whole range
    assert torch.equal(spaced_timesteps(sched, 40, "logsnr-window"), spaced_timesteps(sched, 40, "logsnr"))


def test_every_spacing_is_offered_by_the_cli_and_the_config():
    import dataclasses
    import typing

    from ddpmlab.cli.parser import build_parser
    from ddpmlab.config import SampleConfig
    from ddpmlab.schedules import SPACINGS

    field = next(f for f in dataclasses.fields(SampleConfig) if f.name == "spacing")
    assert list(typing.get_args(typing.get_type_hints(SampleConfig)[field.name])) == ["auto", *SPACINGS, "tuned"]
    commands = build_parser()._subparsers._group_actions[0].choices
    choices = lambda name: list(next(a.choices for a in commands[name]._actions if a.dest == "spacing"))  # noqa: E731
    assert choices("sample") == ["auto", *SPACINGS, "tuned"]
    assert choices("tune") == ["auto", *SPACINGS]  # where the search starts: tuned timesteps are what it makes
    from ddpmlab.studio.jobs.runs import spacing_names

    assert spacing_names() == ["auto", *SPACINGS, "tuned"]

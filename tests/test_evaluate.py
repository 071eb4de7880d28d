"""The eval and nll jobs end to end on tiny trained runs, their CLI commands and their bad-input errors."""

import json

import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config import DataConfig, build_config
from ddpmlab.errors import ConfigError
from ddpmlab.evaluate import evaluate, evaluate_nll, nfe_of, real_sets
from ddpmlab.sampling import load_run, with_sample_settings
from ddpmlab.schedules import spaced_timesteps
from ddpmlab.train import train

from helpers import TINY_UNET, UNGUIDED

TINY = [*TINY_UNET, "model.attention_resolutions=[14]", "train.steps=20",
        "train.batch_size=16", "diffusion.T=100", "sample.steps=5", "train.precision='fp32'", "train.sample_every=0"]


N = 64  # one N for every mnist-5k evaluation here, so the cached floor features are shared


def quiet(_: str) -> None:
    pass


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """$DDPMLAB_CACHE for the module: reference features computed once, by the first evaluation."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(build_config("mnist", None, [*TINY, *UNGUIDED]), out, progress=False, log=quiet)
    return out


@pytest.fixture(scope="module")
def tiny_cond_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny-cond"
    train(build_config("mnist-cond", None, [*TINY, "model.num_classes=10", "train.steps=5"]), out, progress=False,
          log=quiet)
    return out


@pytest.fixture(scope="module")
def gmm8_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gmm8"
    cfg = build_config("moons", None, ['data.name="gmm8"', "data.n_points=2000", "train.steps=30",
                                       "sample.steps=10", "train.sample_every=0"])
    train(cfg, out, progress=False, log=quiet)
    return out


def test_eval_end_to_end_writes_json_and_markdown(tiny_run, cache_root):
    run = load_run(tiny_run)
    cache = cache_root / "eval"
    r = evaluate(run, N, "ddim", 5, sweep_steps=[2, 3], samplers=["ddim", "heun"], cache_dir=cache, log=quiet)
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert saved["metrics"] == pytest.approx(r.metrics.to_json()) and saved["kind"] == "image"
    for key in ("fid", "kid", "kid_std", "precision", "recall"):
        assert key in saved["metrics"] and key in saved["floor"]
    assert r.floor.fid < r.metrics.fid  # 20 training steps make noise, not digits
    assert r.sampling.seconds > 0 and r.metric_seconds > 0
    assert "odd-indexed" in r.info["reference"]  # mnist-5k has no test split: two disjoint halves, and it says so
    md = (tiny_run / "eval.md").read_text()
    assert "FID" in md and "real-vs-real floor" in md and "](eval_samples.png)" in md and "](eval_sweep.png)" in md
    assert (tiny_run / "eval_samples.png").is_file() and (tiny_run / "eval_sweep.png").is_file()
    heun3 = next(row for row in r.sweep if row.sampler == "heun" and row.steps == 3)
    sigma_T = run.schedule.sigma[-1].item() / run.schedule.alpha[-1].item()
    assert heun3.nfe == 2 * 3 - 1 - (1 if sigma_T > 1e3 else 0)  # Heun's first step is Euler above sigma 1e3
    assert len(r.sweep) == 4 and len(saved["sweep"]) == 4
    cached = sorted(p.name for p in (cache).iterdir())
    assert len(cached) == 2 and any("reference" in c for c in cached)
    mtimes = [p.stat().st_mtime_ns for p in cache.iterdir()]
    again = evaluate(run, N, "ddim", 5, cache_dir=cache, log=quiet)  # reuses the cached reference features
    assert [p.stat().st_mtime_ns for p in cache.iterdir()] == mtimes
    assert again.floor == r.floor and again.metrics == r.metrics


def test_eval_conditional_reports_accuracy_per_class_and_per_guidance(tiny_cond_run, cache_root):
    run = load_run(tiny_cond_run)
    r = evaluate(run, N, "ddim", 3, guidance_sweep=[0.0, 2.0], cache_dir=cache_root / "eval", log=quiet)
    c = r.conditional
    assert 0 <= c["accuracy"] <= 1 and len(c["per_class"]) == 10
    assert [row.guidance for row in r.guidance_sweep] == [0.0, 2.0]
    assert all(row.accuracy is not None and row.metrics.fid > 0 for row in r.guidance_sweep)
    saved = json.loads((tiny_cond_run / "eval.json").read_text())
    assert all("accuracy" in row and "fid" in row for row in saved["guidance_sweep"])
    assert r.info["classifier_accuracy_on_real"] > 0.95
    md = (tiny_cond_run / "eval.md").read_text()
    assert "Class-conditional accuracy" in md
    # the judge scores every weight of the sweep (MNIST), in the JSON, the table and the printed summary
    assert all(0 <= row.recognizable <= 1 for row in r.guidance_sweep)
    assert [row["recognizable_share"] for row in saved["guidance_sweep"]] == [row.recognizable for row in r.guidance_sweep]
    assert "| guidance w | FID | accuracy | recognizable |" in md
    printed = [line for line in r.summary_lines() if line.startswith("guidance w = ")]
    assert [line.split(":")[0] for line in printed] == ["guidance w = 0", "guidance w = 2"]
    assert all("accuracy" in line and "recognizable share" in line for line in printed)


def test_eval_2d_exact_metrics_and_mode_coverage(gmm8_run):
    r = evaluate(load_run(gmm8_run), 300, cache_dir=None, log=quiet)
    m, f = r.metrics, r.floor
    assert not r.is_image and f.energy_distance < m.energy_distance
    assert f.mode_coverage["modes_covered"] == 8
    assert 0 <= m.mode_coverage["modes_covered"] <= 8 and m.sliced_wasserstein > 0
    assert json.loads((gmm8_run / "eval.json").read_text())["kind"] == "2d"
    assert "modes covered" in (gmm8_run / "eval.md").read_text()


def test_nfe_counts_heun_twice_per_step_but_once_on_the_last(tiny_run):
    run = load_run(tiny_run)
    sigma_T = (r0 := run.schedule).sigma[-1].item() / r0.alpha[-1].item()
    euler_first = 1 if sigma_T > 1e3 else 0  # Heun takes a plain Euler step from above sigma = 1e3 (cosine's T)
    for sampler, per in (("heun", 2), ("ddim", 1), ("dpmpp-2m", 1)):
        r = with_sample_settings(run, sampler=sampler, steps=6, spacing="karras")
        k = len(spaced_timesteps(r.schedule, 6, "karras"))
        assert nfe_of(r) == per * k - (per - 1) - (euler_first if sampler == "heun" else 0)


def test_real_sets_without_a_test_split_are_disjoint_halves():
    sets = real_sets(DataConfig(name="mnist-5k"), 100)
    assert len(sets.reference) == 2500 and len(sets.floor) == 100
    assert torch.bincount(sets.reference_labels).tolist() == [250] * 10  # mnist-5k is sorted by label
    ref = {tuple(x.flatten()[::7].tolist()) for x in sets.reference[:500]}
    assert not any(tuple(x.flatten()[::7].tolist()) in ref for x in sets.floor)


def test_nll_on_a_tiny_run(tiny_run):
    r = evaluate_nll(load_run(tiny_run), 4, timesteps=5)
    assert 0 < r.bits_per_dim < 50 and r.estimate["evaluations_per_image"] == 6
    assert json.loads((tiny_run / "nll.json").read_text())["bits_per_dim"] == r.bits_per_dim


def test_cli_eval_and_nll(tiny_run, cache_root, monkeypatch, capsys):
    monkeypatch.setenv("DDPMLAB_CACHE", str(cache_root))
    assert main(["eval", str(tiny_run), "--n", str(N), "--sampler", "dpmpp-2m", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "FID" in out and "eval.md" in out
    assert main(["nll", str(tiny_run), "--n", "2", "--timesteps", "3"]) == 0
    assert "bits/dim" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["eval", "{run}", "--n", "3"], "--n must be at least"),
    (["eval", "{run}", "--sampler", "nope"], "unknown sampler"),
    (["eval", "{run}", "--samplers", "ddim,nope", "--sweep-steps", "2"], "unknown sampler"),
    (["eval", "{run}", "--guidance", "1"], "class-conditional"),
    (["eval", "{run}", "--features", "inception"], "--inception-weights"),
    (["eval", "{run}", "--steps", "1000"], "cannot exceed"),
    (["eval", "{missing}"], "does not exist"),
    (["nll", "{run}", "--timesteps", "0"], "--timesteps"),
])
def test_cli_bad_input_is_one_line_exit_2(tiny_run, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path))
    argv = [a.format(run=tiny_run, missing=tmp_path / "missing") for a in argv]
    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddpmlab: error:") and message in err and "\n" not in err
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_eval_refuses_guidance_sweep_on_an_unconditional_run(tiny_run):
    with pytest.raises(ConfigError):
        evaluate(load_run(tiny_run), 20, guidance_sweep=[0.0, 1.0], cache_dir=None, log=quiet)

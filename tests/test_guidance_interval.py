"""sample.guidance_interval: guidance only at noise levels in (lo, hi], the plain network elsewhere."""

import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config import build_config
from ddpmlab.errors import ConfigError
from ddpmlab.guidance import in_interval
from ddpmlab.sampling import Run, sample, with_sample_settings
from ddpmlab.train import train

from helpers import tiny_image_config

LEVELS = torch.tensor([0.0, 0.1, 1.0, 5.0, 50.0])  # sigma_t / alpha_t at t = 0..4


def test_in_interval_guides_inside_and_evaluates_only_the_plain_network_outside():
    calls = {"guided": 0, "plain": 0}

    def guided(x, t, y=None):
        calls["guided"] += 1
        return torch.ones_like(x)

    def plain(x, t, y=None):
        calls["plain"] += 1
        return torch.zeros_like(x)

    net = in_interval(guided, plain, LEVELS, 0.5, 5.0)
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(net(x, torch.tensor([2, 3, 3])), torch.ones_like(x))  # 1.0 and 5.0: inside (hi included)
    assert calls == {"guided": 1, "plain": 0}
    assert torch.equal(net(x, torch.tensor([1, 4, 0])), torch.zeros_like(x))  # 0.1, 50, 0: outside
    assert calls == {"guided": 1, "plain": 1}
    mixed = net(x, torch.tensor([1, 2, 4]))
    assert mixed[:, 0, 0, 0].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("interval, message", [("[1.0]", "two noise levels"), ("[5.0, 1.0]", "lo < hi"),
                                               ("[-1.0, 2.0]", "0 <= lo"), ("[0.1, 1.0, 2.0]", "two noise levels")])
def test_a_malformed_interval_is_refused(interval, message):
    with pytest.raises(ConfigError, match="sample.guidance_interval"):
        build_config("mnist-cond", None, ["sample.guidance=1", f"sample.guidance_interval={interval}"])


def test_an_interval_without_guidance_is_refused_and_guidance_zero_drops_it():
    with pytest.raises(ConfigError, match="applies only with sample.guidance > 0"):
        build_config("mnist-cond", None, ["sample.guidance=0", "sample.guidance_interval=[0.3, 5.0]"])
    cfg = build_config("mnist-cond", None, ["sample.guidance=1", "sample.guidance_interval=[0.3, 5.0]"])
    assert cfg.sample.guidance_interval == (0.3, 5.0)


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("interval") / "run"
    train(tiny_image_config("train.guide_at=0.25", "sample.guidance=1"), out, progress=False, log=lambda _: None)
    return Run.load(out, device="cpu")


def test_an_interval_holding_every_step_is_plain_guidance_and_one_holding_none_is_no_guidance(guided_run):
    sigma_over_alpha = guided_run.schedule.sigma / guided_run.schedule.alpha
    everywhere = (0.0, float(sigma_over_alpha[-1]) * 2)
    nowhere = (0.0, float(sigma_over_alpha[1]) / 2)  # below the smallest noise level the sampler visits
    guided = sample(with_sample_settings(guided_run, guidance=1.0), 4)
    unguided = sample(with_sample_settings(guided_run, guidance=0.0), 4)
    assert torch.equal(sample(with_sample_settings(guided_run, guidance=1.0, guidance_interval=everywhere), 4), guided)
    assert torch.equal(sample(with_sample_settings(guided_run, guidance=1.0, guidance_interval=nowhere), 4), unguided)
    middle = sample(with_sample_settings(guided_run, guidance=1.0, guidance_interval=(0.5, 5.0)), 4)
    assert not torch.equal(middle, guided) and not torch.equal(middle, unguided)
    dropped = with_sample_settings(with_sample_settings(guided_run, guidance=1.0, guidance_interval=(0.5, 5.0)),
                                   guidance=0.0)
    assert dropped.cfg.sample.guidance_interval == ()


def test_the_cli_takes_an_interval_and_refuses_a_bad_one(guided_run, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["sample", str(guided_run.path), "--n", "2", "--guidance-interval", "0.5,5", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["sample", str(guided_run.path), "--n", "2", "--guidance-interval", "5,0.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ddpmlab: error: sample.guidance_interval (--guidance-interval) must be two noise")
    assert main(["sample", str(guided_run.path), "--n", "2", "--guidance", "0", "--guidance-interval", "0.5,5",
                 "--out", str(out)]) == 2
    assert "applies only with sample.guidance (--guidance) > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        from ddpmlab.cli.parser import build_parser

        build_parser().parse_args(["sample", "r", "--guidance-interval", "a,b"])

"""Typed configs (config.py): presets, dotted overrides, the TOML round trip, and validate(), the one place that
checks ranges and option combinations."""

import dataclasses

import pytest

from ddpmlab.config import Config, build_config, from_toml_text, load_preset, preset_names, to_toml, validate
from ddpmlab.errors import ConfigError


def test_every_preset_loads_and_validates():
    names = preset_names()
    assert {"mnist", "moons", "fashion-mnist", "cifar10"} <= set(names)
    for name in names:
        cfg = load_preset(name)
        checked = validate(cfg)
        assert cfg.name == name and validate(checked) is checked
        # validation changes nothing, except that model.num_classes follows data.clusters where it is unset
        assert checked is cfg or (cfg.data.clusters and not cfg.model.num_classes
                                  and checked.model.num_classes == cfg.data.clusters)


def test_overrides_are_typed_and_win_over_the_preset():
    cfg = build_config("mnist", None, ["train.steps=123", "model.channel_mults=[1, 2]", "sample.sampler='ddim'"])
    assert cfg.train.steps == 123 and cfg.model.channel_mults == (1, 2) and cfg.sample.sampler == "ddim"


def test_toml_round_trip_is_exact():
    cfg = build_config("fashion-mnist-cond", None, ["sample.guidance=1.5", "train.lr=3e-4"])
    assert from_toml_text(to_toml(cfg), "test") == cfg


@pytest.mark.parametrize("overrides, message", [
    (["sample.sampler='magic'"], "unknown sampler 'magic'"),
    (["sample.sampler='euler'", "sample.eta=0.5"], "sample.eta = 0.5 applies only to ddim"),
    (["sample.sampler='dpmpp-2m'", "sample.variance='beta'"], "sample.variance = 'beta' applies only to ddpm"),
    (["sample.sampler='ddim'", "sample.s_churn=2.0"], "sample.s_churn = 2.0 applies only to heun"),
    (["diffusion.schedule='cosine'", "diffusion.beta_end=0.02"], "diffusion.beta_end applies only to the linear"),
    (["diffusion.schedule='linear'", "diffusion.a=0.5"], "diffusion.a applies only to the geometric"),
])
def test_settings_that_would_do_nothing_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config("mnist", None, overrides)


def test_an_option_of_the_chosen_sampler_is_accepted():
    assert build_config("mnist", None, ["sample.sampler='ddim'", "sample.eta=0.5"]).sample.eta == 0.5
    assert build_config("mnist", None, ["sample.sampler='heun'", "sample.s_churn=1.0"]).sample.s_churn == 1.0
    assert build_config("tutorial-tinycnn").diffusion.a == 0.9  # geometric takes a


def test_validate_checks_a_config_built_in_code_too():
    cfg = Config()
    bad = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, steps=cfg.diffusion.T + 1))
    with pytest.raises(ConfigError, match="cannot exceed diffusion.T"):
        validate(bad)

"""Typed, frozen run configuration: TOML presets, config files and dotted `--set a.b=value` overrides.

The config.toml saved in a run directory is the single source of truth for that run.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist-5k"  # a registered dataset or folder:PATH
    root: str = "data"  # where torchvision datasets are downloaded / looked for
    image_size: int = 0  # 0 keeps the dataset's native size
    hflip: bool = False  # random horizontal flips during training
    n_points: int = 20000  # size of a 2D toy dataset
    # prompts of a text-conditional run: "dataset" = the data's own captions (emoji, a captioned folder),
    # "templates" = templated class prompts (mnist, mnist-5k, fashion-mnist, cifar10; captions.class_prompts)
    captions: Literal["dataset", "templates"] = "dataset"
    # > 0: K k-means clusters of the training images are the labels of a class-conditional model (self-guidance;
    # clusters.py), so guidance sharpens a model trained without labels; model.num_classes follows (K) when unset
    clusters: int = 0


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["unet", "mlp", "tinycnn", "simpleunet"] = "unet"
    channels: int = 32  # U-Net base width; TinyCNN hidden width; SimpleUnet first width
    channel_mults: tuple[int, ...] = (1, 2, 2)  # U-Net / SimpleUnet width per level
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (7,)  # feature-map sizes (px) with self-attention
    heads: int = 1
    dropout: float = 0.0
    num_classes: int = 0  # > 0: class-conditional, with one extra "null" label
    context_dim: int = 0  # > 0: text-conditional U-Net reading prompt embeddings this wide (384: all-MiniLM-L6-v2)
    text_encoder: str = ""  # sentence encoder directory for a text run; "" = the installed all-MiniLM-L6-v2
    hidden: int = 128  # MLP width
    depth: int = 3  # MLP hidden layers


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: Literal["linear", "cosine", "sigmoid", "geometric"] = "cosine"
    T: int = 1000
    beta_start: float = 0.0  # linear only; 0 means 1e-4 * 1000 / T
    beta_end: float = 0.0  # linear only; 0 means 0.02 * 1000 / T
    a: float = 0.9  # geometric only: alpha_bar_t = a^t
    prediction: Literal["eps", "x0", "v", "edm"] = "eps"  # edm: EDM's preconditioning with sigma_data
    # the loss weight: none, min(snr, gamma), EDM's lambda(sigma), or that over EDM2's learned e^u(sigma) plus u
    weighting: Literal["simple", "min-snr", "edm", "uncertainty"] = "simple"
    min_snr_gamma: float = 5.0  # min-snr only
    sigma_data: float = 0.5  # weighting edm / uncertainty and prediction edm only: the data's standard deviation
    # training t: uniform; ln(sigma/alpha) ~ N(t_mean, t_std); log-SNR ~ Laplace or logistic(t_loc, t_scale); or
    # importance-sampled by each range of t's running loss (the uniform objective, reweighted)
    t_sampling: Literal["uniform", "lognormal", "laplace", "logistic", "adaptive"] = "uniform"
    t_mean: float = -1.2  # lognormal only (EDM's P_mean)
    t_std: float = 1.2  # lognormal only (EDM's P_std)
    t_loc: float = 0.0  # laplace and logistic only: the log-SNR density's location
    t_scale: float = 0.5  # laplace and logistic only: its scale (Hang et al. 2024's Laplace: 0, 0.5)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    adam_beta2: float = 0.999  # AdamW's second-moment decay (the first is 0.9)
    weight_decay: float = 0.0
    warmup: int = 100  # linear learning-rate warmup steps
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay_n = min(ema_decay, (1 + n) / (10 + n))
    ema: Literal["constant", "power"] = "constant"  # power: EDM2's power-function EMA of relative width ema_sigma_rel
    ema_sigma_rel: float = 0.1  # power only: the EMA's width as a fraction of the run so far (Karras et al. 2024)
    guide_at: float = 0.0  # > 0: keep the EMA at this fraction of train.steps as the run's autoguidance guide
    seed: int = 0
    minutes: float = 0.0  # wall-clock budget; 0 means no budget
    log_every: int = 50
    sample_every: int = 0  # periodic sample grids; 0 turns them off
    ckpt_every: int = 1000
    keep: int = 1  # complete checkpoints kept under checkpoints/ (the newest is also at the top level)
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    p_uncond: float = 0.1  # label dropout for classifier-free guidance (conditional models)
    max_nonfinite: int = 5  # stop after this many non-finite (NaN/Inf) steps in a row; each is skipped
    grad_accum: int = 1  # split each (global) batch into this many micro-batches, one optimizer step per batch


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "ddpm"
    steps: int = 100  # network evaluations; at most diffusion.T
    # "auto": per sampler and steps; "tuned": the run's timesteps.json, fitted to the network by `ddpmlab tune`
    spacing: Literal["auto", "leading", "trailing", "linspace", "quadratic", "karras", "logsnr",
                     "logsnr-window", "rho-window", "tuned"] = "auto"
    variance: Literal["beta", "posterior"] = "posterior"  # DDPM sigma_t^2: beta_t or beta-tilde_t
    eta: float = 0.0  # DDIM stochasticity: 0 deterministic, 1 ancestral
    s_churn: float = 0.0  # Heun (Karras Alg. 2) stochastic churn; 0 is deterministic
    guidance: float = 0.0  # guidance weight w: classifier-free (conditional runs) or autoguidance (train.guide_at)
    # () guides at every step; (lo, hi) only where the noise level sigma_t / alpha_t lies in (lo, hi], the plain
    # network elsewhere at one evaluation per step (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval")
    guidance_interval: tuple[float, ...] = ()
    clip: bool = True  # clip predicted x0 to [-1, 1] (images only)
    batch_size: int = 256
    seed: int = 0
    # the network's precision while sampling images: auto = bf16 autocast for v/x0-prediction networks where the
    # hardware runs bf16 natively, fp32 otherwise (sampling.py says why); the sampler's arithmetic stays fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "name")

# Fields that must be positive (> 0) or non-negative (>= 0); checked after every merge.
_POSITIVE = {
    "diffusion.T", "train.steps", "train.batch_size", "train.lr", "train.log_every", "train.ckpt_every", "train.keep", "train.max_nonfinite", "train.grad_accum",
    "model.channels", "model.num_res_blocks", "model.heads", "model.hidden", "model.depth",
    "sample.steps", "sample.batch_size", "data.n_points", "diffusion.min_snr_gamma", "diffusion.t_std",
    "diffusion.t_scale", "diffusion.sigma_data",
}
_NON_NEGATIVE = {
    "data.image_size", "model.num_classes", "model.dropout", "diffusion.beta_start", "diffusion.beta_end",
    "train.weight_decay", "train.warmup", "train.grad_clip", "train.minutes", "train.sample_every",
    "train.seed", "sample.seed", "train.min_lr_ratio", "sample.eta", "sample.s_churn", "sample.guidance",
    "model.context_dim", "data.clusters",
}
_UNIT_INTERVAL = {"train.adam_beta2", "train.ema_decay", "train.p_uncond", "model.dropout", "train.guide_at"}


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("ddpmlab.configs").iterdir() if p.name.endswith(".toml"))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check and convert one value to a field's annotated type, or raise ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(key, v, args[0]) for v in items)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} for {key}")  # pragma: no cover


def _merge(cfg: Config, table: dict[str, Any], origin: str) -> Config:
    """Overlay a nested {section: {field: value}} table on cfg."""
    changes: dict[str, Any] = {}
    for section, values in table.items():
        if section == "name":
            changes["name"] = _coerce("name", values, str)
            continue
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table of settings")
        current = getattr(cfg, section)
        hints = typing.get_type_hints(type(current))
        updates = {}
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(
                    f"{origin}: unknown setting {section}.{key}; valid: {', '.join(f'{section}.{k}' for k in hints)}"
                )
            updates[key] = _coerce(f"{section}.{key}", value, hints[key])
        changes[section] = dataclasses.replace(current, **updates)
    return dataclasses.replace(cfg, **changes)


def parse_override(item: str) -> dict[str, Any]:
    """'train.steps=2000' -> {'train': {'steps': 2000}}; values are read as TOML, else as a plain string."""
    if "=" not in item:
        raise ConfigError(f"--set needs SECTION.KEY=VALUE, e.g. train.steps=2000; got {item!r}")
    path, raw = item.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2:
        raise ConfigError(f"--set key must be SECTION.KEY (e.g. model.channels); got {path!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    if isinstance(value, str) and value.lower() in {"nan", "+nan", "-nan", "inf", "+inf", "-inf"}:
        value = float(value)
    return {parts[0]: {parts[1]: value}}


def validate(cfg: Config) -> Config:
    """Range checks that no type annotation can express; model.num_classes follows data.clusters when unset."""
    if cfg.data.clusters > 0 and not cfg.model.num_classes and not cfg.model.context_dim:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=cfg.data.clusters))
    flat = {f"{s}.{k}": v for s in SECTIONS for k, v in dataclasses.asdict(getattr(cfg, s)).items()}
    for key in _POSITIVE:
        if flat[key] <= 0:
            raise ConfigError(f"{key} must be positive; got {flat[key]}")
    for key in _NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"{key} must not be negative; got {flat[key]}")
    for key in _UNIT_INTERVAL:
        if not 0 <= flat[key] < 1:
            raise ConfigError(f"{key} must lie in [0, 1); got {flat[key]}")
    if cfg.sample.steps > cfg.diffusion.T:
        raise ConfigError(f"sample.steps ({cfg.sample.steps}) cannot exceed diffusion.T ({cfg.diffusion.T})")
    if not 0 < cfg.diffusion.a < 1:
        raise ConfigError(f"diffusion.a must lie in (0, 1); got {cfg.diffusion.a}")
    _validate_text(cfg)
    _validate_sampler(cfg.sample)
    d = cfg.diffusion
    given = [k for k, v in (("beta_start", d.beta_start), ("beta_end", d.beta_end)) if v] + (["a"] if d.a != 0.9 else [])
    for key in given:  # a schedule parameter set for another schedule would do nothing
        owner = "geometric" if key == "a" else "linear"
        if d.schedule != owner:
            raise ConfigError(f"diffusion.{key} applies only to the {owner} schedule, not {d.schedule}; drop it or "
                              f"set diffusion.schedule = \"{owner}\"")
    _validate_choices(cfg)
    if d.schedule == "linear":
        from .schedules import linear_endpoint_problem, linear_endpoints  # noqa: PLC0415 (torch loads lazily there)

        problem = linear_endpoint_problem(d.T, *linear_endpoints(d.T, d.beta_start or None, d.beta_end or None))
        if problem:
            raise ConfigError(problem)
    return cfg


def _validate_choices(cfg: Config) -> None:
    """Settings that belong to one choice of another (t_mean to lognormal t, ema_sigma_rel to the power EMA)."""
    d, tc = cfg.diffusion, cfg.train
    owned = [("diffusion.t_mean", d.t_mean, -1.2, 'diffusion.t_sampling = "lognormal"', d.t_sampling == "lognormal"),
             ("diffusion.t_std", d.t_std, 1.2, 'diffusion.t_sampling = "lognormal"', d.t_sampling == "lognormal"),
             ("diffusion.t_loc", d.t_loc, 0.0, 'diffusion.t_sampling = "laplace" or "logistic"',
              d.t_sampling in ("laplace", "logistic")),
             ("diffusion.t_scale", d.t_scale, 0.5, 'diffusion.t_sampling = "laplace" or "logistic"',
              d.t_sampling in ("laplace", "logistic")),
             ("diffusion.min_snr_gamma", d.min_snr_gamma, 5.0, 'diffusion.weighting = "min-snr"',
              d.weighting == "min-snr"),
             ("diffusion.sigma_data", d.sigma_data, 0.5,
              'diffusion.weighting = "edm" or "uncertainty", or diffusion.prediction = "edm"',
              d.weighting in ("edm", "uncertainty") or d.prediction == "edm"),
             ("train.ema_sigma_rel", tc.ema_sigma_rel, 0.1, 'train.ema = "power"', tc.ema == "power"),
             ("train.ema_decay", tc.ema_decay, 0.999, 'train.ema = "constant"', tc.ema == "constant")]
    for key, value, default, owner, chosen in owned:
        if value != default and not chosen:
            raise ConfigError(f"{key} = {value} applies only with {owner}; drop it (or set {key}={default})")
    m, w = cfg.model, cfg.sample.guidance
    if w and not m.num_classes and not m.context_dim and not tc.guide_at:
        raise ConfigError(f"sample.guidance = {w:g} needs a class-conditional run or a guide; this model has no labels "
                          "(model.num_classes = 0): set train.guide_at (e.g. 0.3) before training for autoguidance, "
                          "or sample.guidance = 0")
    if tc.guide_at and (m.num_classes or m.context_dim):
        raise ConfigError(f"train.guide_at = {tc.guide_at:g} keeps a guide for autoguidance of an unconditional run; a "
                          "conditional run is guided through its null label: set train.guide_at = 0")
    k = cfg.data.clusters
    if k and (k < 2 or m.num_classes != k):
        raise ConfigError(f"data.clusters = {k} needs model.num_classes = {k} (one label per cluster; leave it unset "
                          f"and it follows), got model.num_classes = {m.num_classes}" if k >= 2 else
                          f"data.clusters must be 0 (the dataset's own labels) or at least 2; got {k}")
    iv = cfg.sample.guidance_interval
    if iv and (len(iv) != 2 or not 0 <= iv[0] < iv[1]):
        raise ConfigError(f"sample.guidance_interval must be two noise levels [lo, hi] with 0 <= lo < hi (or [] to "
                          f"guide at every step); got {list(iv)}")
    if iv and not w:
        raise ConfigError(f"sample.guidance_interval = {list(iv)} applies only with sample.guidance > 0; drop it "
                          "(or set sample.guidance)")
    if tc.ema == "power" and not 0 < tc.ema_sigma_rel < 0.28:
        raise ConfigError(f"train.ema_sigma_rel must lie in (0, 0.28) (the widest power EMA); got {tc.ema_sigma_rel}")


def _validate_sampler(s: SampleConfig) -> None:
    """A known sampler, and no option set that it does not take (sample.eta with euler would do nothing)."""
    from .samplers import SAMPLERS, option_problem  # noqa: PLC0415 (torch loads lazily there)

    if s.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {s.sampler!r} (sample.sampler); choose one of {', '.join(SAMPLERS)}")
    problem = option_problem(s.sampler, s)
    if problem:
        raise ConfigError(problem)


TEMPLATED = ("mnist", "mnist-5k", "fashion-mnist", "cifar10")  # datasets with captions.class_prompts


def _validate_text(cfg: Config) -> None:
    """Text settings that only make sense together."""
    m, d = cfg.model, cfg.data
    if m.context_dim and d.clusters:
        raise ConfigError(f"model.context_dim and data.clusters = {d.clusters} cannot both be set; a text run is "
                          "conditioned by prompts alone (set data.clusters = 0)")
    if m.context_dim and m.num_classes:
        raise ConfigError("model.context_dim and model.num_classes cannot both be set; a text run is conditioned "
                          "by prompts alone (set model.num_classes = 0)")
    if not m.context_dim and (d.captions != "dataset" or m.text_encoder):
        key = "data.captions" if d.captions != "dataset" else "model.text_encoder"
        raise ConfigError(f"{key} needs a text-conditional model; set model.context_dim = 384")
    if d.captions == "templates" and d.name not in TEMPLATED:
        raise ConfigError(f'data.captions = "templates" needs one of {", ".join(TEMPLATED)}; '
                          f'{d.name} takes data.captions = "dataset"')


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing .toml file")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix the file") from None


def load_preset(name: str) -> Config:
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(names)}")
    text = resources.files("ddpmlab.configs").joinpath(f"{name}.toml").read_text()
    return _merge(Config(name=name), tomllib.loads(text), f"preset {name}")


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    base: Config | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
) -> Config:
    """Preset (or `base`, or defaults), then a config file, then each --set override, then `settings`
    ({section: {key: value}}, already typed), then range checks."""
    cfg = base if base is not None else load_preset(preset) if preset else Config()
    if config_file:
        cfg = _merge(cfg, read_toml(config_file), str(config_file))
    for item in overrides:
        cfg = _merge(cfg, parse_override(item), "--set")
    if settings:
        cfg = _merge(cfg, settings, "command line")
    return validate(cfg)


def to_dict(cfg: Config) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    out: dict[str, Any] = {"name": cfg.name}
    for s in SECTIONS:
        out[s] = {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, s)).items()}
    return out


def to_toml(cfg: Config) -> str:
    import tomli_w

    return tomli_w.dumps(to_dict(cfg))


def from_toml_text(text: str, origin: str) -> Config:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin} is not valid TOML ({exc})") from None
    return validate(_merge(Config(), table, origin))

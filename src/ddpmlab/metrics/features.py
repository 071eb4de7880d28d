"""Feature extractors phi(x) for FID, KID and precision/recall: shipped 28x28 classifiers, Inception-v3, pixels.

Notation:
    x        images (B, C, H, W) in [-1, 1]
    phi(x)   features (B, F): F = 128 for the shipped classifiers (their penultimate layer),
             2048 for Inception-v3's pool features (Szegedy et al. 2016; Heusel et al. 2017 use them for FID),
             256 for the pixel random projection (the fallback; not comparable with published numbers)

`select_features` is the only name -> extractor dispatch. Weights are read from safetensors, or from
a .pth / .pt file through torch.load(weights_only=True); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

FeatureKind = Literal["auto", "classifier", "inception"]

# dataset name -> shipped classifier weights (trained by benchmarks/train_classifier.py)
CLASSIFIER_FILES = {"mnist": "mnist_cnn.safetensors", "fashion-mnist": "fashion_mnist_cnn.safetensors"}
DATASET_CLASSIFIER = {"mnist-5k": "mnist", "mnist": "mnist", "fashion-mnist": "fashion-mnist"}
FEATURE_DIM = 128


class SmallCNN(nn.Module):
    """A compact 28x28 grayscale classifier: 3 conv blocks, a 128-unit penultimate layer, 10 logits.

    x: (B, 1, 28, 28) in [-1, 1] (other sizes are resized). ~0.24M parameters, ~1 MB in float32.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                 nn.ReLU(), nn.MaxPool2d(2))

        self.conv = nn.Sequential(block(1, 32), block(32, 64), block(64, 128))  # 28 -> 14 -> 7 -> 3
        self.fc = nn.Linear(128 * 3 * 3, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, num_classes)
        # set after training: the RMS per-unit std of the penultimate layer on the training images, so that
        # features() has unit average variance on real data (FID / KID then read on a fixed, sensible scale)
        self.register_buffer("feature_scale", torch.ones(()))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 128) penultimate pre-activations; x: (B, 1, H, W) in [-1, 1], resized to 28 x 28 if needed."""
        if x.shape[-2:] != (28, 28):
            x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        return self.fc(self.conv(x).flatten(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 128): the penultimate layer before its ReLU (full rank, so feature covariances stay invertible),
        divided by feature_scale."""
        return self.hidden(x) / self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 10) logits."""
        return self.head(F.relu(self.hidden(x)))


def mnist_5k_heldout(y: torch.Tensor, per_class: int = 100) -> torch.Tensor:
    """(N,) bool mask of mnist-5k's held-out images for the mnist classifier: the last 100 of each digit.

    (mnist-5k is sorted by label, 500 per digit, so "the last 1000 images" would be only 8s and 9s.)
    """
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique():
        mask[torch.nonzero(y == c).flatten()[-per_class:]] = True
    return mask


@dataclass
class FeatureExtractor:
    """phi: images (B, C, H, W) in [-1, 1] -> (B, dim) features; `key` names it in reference-statistics caches."""

    key: str
    dim: int
    phi: Callable[[torch.Tensor], torch.Tensor]
    comparable: bool  # are FIDs with it comparable with published numbers for this dataset?
    note: str
    classifier: SmallCNN | None = None  # present for the shipped classifiers: gives class predictions
    info: dict[str, str] = field(default_factory=dict)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(N, dim) float32 features of x: (N, C, H, W), computed in batches on the CPU."""
        return torch.cat([self.phi(b.float()).float().cpu() for b in x.split(batch_size)]) if len(x) else \
            torch.zeros(0, self.dim)


def weights_path(name: str) -> Path:
    """The shipped classifier weights for `mnist` or `fashion-mnist`."""
    return Path(str(resources.files("ddpmlab") / "weights" / CLASSIFIER_FILES[name]))


def load_shipped(net: nn.Module, path: Path, what: str, dataset: str) -> tuple[nn.Module, dict[str, str]]:
    """net (eval mode) with the shipped safetensors weights at path, and their metadata; one line if missing."""
    from safetensors import safe_open

    if not path.is_file():
        raise ConfigError(f"the {what} weights {path} are missing; run "
                          f"`python benchmarks/train_classifier.py --dataset {dataset}` to rebuild them")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    net.load_state_dict(tensors)
    return net.eval(), meta


def load_classifier(name: str) -> tuple[SmallCNN, dict[str, str]]:
    """The shipped classifier (eval mode) and its safetensors metadata (dataset, test accuracy, settings)."""
    return load_shipped(SmallCNN(), weights_path(name), f"{name} classifier", name)  # type: ignore[return-value]


def classifier_features(name: str) -> FeatureExtractor:
    """The shipped `mnist` / `fashion-mnist` classifier's 128-d penultimate layer."""
    net, meta = load_classifier(name)
    digest = hashlib.sha256(weights_path(name).read_bytes()).hexdigest()[:12]
    acc = meta.get("test_accuracy", "?")
    return FeatureExtractor(f"classifier-{name}-{digest}", FEATURE_DIM, net.features, comparable=False,
                            note=f"penultimate layer of ddpmlab's {name} CNN (test accuracy {acc}); numbers are "
                                 "comparable between ddpmlab runs, not with papers' Inception FIDs",
                            classifier=net, info=meta)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pth / .pt through torch.load(weights_only=True)."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--inception-weights {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not a readable safetensors file ({exc})") from None
    if path.suffix not in (".pth", ".pt"):
        raise ConfigError(f"--inception-weights must be a .safetensors, .pth or .pt file, got {path.name}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path} was refused by the safe loader ({first[:160]}); save a plain state dict") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{path} does not hold a state dict of tensors")
    return sd


def build_inception(weights: str | Path) -> nn.Module:
    """torchvision's inception_v3 (aux_logits off, fc removed) with a user's state dict; eval mode.

    AuxLogits.* and fc.* entries in the file are ignored (the features are the 2048-d pool output).
    """
    from torchvision.models import inception_v3

    sd = {k.removeprefix("module."): v for k, v in load_state_dict_file(weights).items()}
    sd = {k: v for k, v in sd.items() if not k.startswith(("AuxLogits.", "fc."))}
    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    net.fc = nn.Identity()
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(expected) & set(sd) if expected[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise ConfigError(f"{weights} is not an Inception-v3 state dict: {len(missing)} missing, "
                          f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped keys (e.g. {example})")
    net.load_state_dict(sd)
    return net.eval()


def inception_features(weights: str | Path) -> FeatureExtractor:
    """2048-d pool features; inputs resized to 299 x 299 (bilinear), grayscale replicated to 3 channels.

    Inputs stay in [-1, 1], the range the TF-ported FID Inception weights expect (transform_input is off).
    """
    net = build_inception(weights)
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]

    def phi(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return net(x)

    return FeatureExtractor(f"inception-{digest}", 2048, phi, comparable=True,
                            note=f"Inception-v3 pool features from {Path(weights).name}; comparable with published "
                                 "FIDs only if these are the standard FID weights and N matches")


def pixel_features(item_shape: tuple[int, ...], dim: int = 256, seed: int = 0) -> FeatureExtractor:
    """A fixed Gaussian random projection of the pixels (average-pooled to at most 32 x 32) to `dim` dims."""
    c, h, w = item_shape
    hp, wp = min(h, 32), min(w, 32)
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(c * hp * wp, dim, generator=gen) / (c * hp * wp) ** 0.5

    def phi(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (hp, wp):
            x = F.adaptive_avg_pool2d(x, (hp, wp))
        return x.flatten(1) @ proj

    return FeatureExtractor(f"pixels{hp}x{wp}-rp{dim}-seed{seed}", dim, phi, comparable=False,
                            note="random projection of pixels (no trained feature network for this dataset): "
                                 "NOT comparable with published FIDs, only between runs on this dataset")


def select_features(dataset: str, item_shape: tuple[int, ...], kind: FeatureKind = "auto",
                    inception_weights: str | Path | None = None) -> FeatureExtractor:
    """The extractor for a dataset. auto: Inception if weights are given, else the shipped classifier, else pixels."""
    has_classifier = dataset in DATASET_CLASSIFIER and item_shape[0] == 1
    if kind == "inception" or (kind == "auto" and inception_weights):
        if not inception_weights:
            raise ConfigError("--features inception needs --inception-weights PATH (a state dict of torchvision's "
                              "inception_v3; nothing is downloaded)")
        return inception_features(inception_weights)
    if kind == "classifier" or (kind == "auto" and has_classifier):
        if not has_classifier:
            raise ConfigError(f"no shipped classifier for {dataset} {tuple(item_shape)}; classifiers exist for "
                              f"{', '.join(DATASET_CLASSIFIER)} (1 channel); use --features inception or auto")
        return classifier_features(DATASET_CLASSIFIER[dataset])
    if kind != "auto":
        raise ConfigError(f"unknown --features {kind!r}; choose auto, classifier or inception")
    return pixel_features(item_shape)


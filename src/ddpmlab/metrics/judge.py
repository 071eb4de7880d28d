"""The MNIST judge: is a sample a recognizable digit, and are the digits balanced across classes?

Notation:
    p(c | x)    the judge's softmax over 11 classes: the digits 0-9 and 10 = "not a digit"
    verdict     argmax_c p(c | x) if that is a digit with p >= tau (tau = 0.9), else 10 (reject)
    share       recognizable share: the fraction of samples whose verdict is a digit
    n_c         samples with verdict c among the R recognizable ones; q_c = n_c / R
    balance     max_c |q_c - 1/10|, total variation 1/2 sum_c |q_c - 1/10|, and Pearson's chi^2 of n_c
                against R / 10 each (9 degrees of freedom)

The judge is a small CNN (JudgeCNN) trained by benchmarks/train_classifier.py --dataset mnist-judge on the
4,000 training digits of mnist-5k and on generated negatives (metrics/negatives.py). It is separate from
the FID feature classifier (features.py), whose weights stay as they are. Floor and ceiling: the share on
pure noise and on held-out negatives (should be ~0), and on the judge's 1,000 held-out real digits (~1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


JUDGE_FILES = {"mnist": "mnist_judge.safetensors"}
DATASET_JUDGE = {"mnist-5k": "mnist", "mnist": "mnist"}
NUM_DIGITS = 10
REJECT = NUM_DIGITS  # the 11th class
THRESHOLD = 0.9
# a fixed Gaussian blur (sigma in pixels) on every input: sub-pixel resampling and sharpness then differ too
# little between real digits, augmented digits and negatives to serve the network as a cue
INPUT_BLUR = 0.7


class JudgeCNN(nn.Module):
    """28x28 grayscale -> 11 logits (0-9, then "not a digit"): 3 conv blocks, a 96-unit layer, ~158k parameters.

    x: (B, 1, H, W) in [-1, 1], resized to 28 x 28 if needed, then blurred by INPUT_BLUR.
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 96), hidden: int = 96,
                 num_classes: int = NUM_DIGITS + 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((1, *widths[:-1]), widths):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d(2)]
        self.conv = nn.Sequential(*layers)  # 28 -> 14 -> 7 -> 3
        self.fc = nn.Linear(widths[-1] * 3 * 3, hidden)
        self.head = nn.Linear(hidden, num_classes)
        # set after training: subtracted from the reject logit so that a calibration split of real digits
        # (not trained on) is recognizable at the target share; 0 during training
        self.register_buffer("reject_bias", torch.zeros(()))
        t = torch.arange(-2, 3, dtype=torch.float32)
        k = torch.exp(-t ** 2 / (2 * INPUT_BLUR ** 2))
        self.register_buffer("smooth", (torch.outer(k, k) / k.sum() ** 2)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 11) logits, the last one lowered by reject_bias."""
        if x.shape[-2:] != (28, 28):
            x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        x = F.conv2d(F.pad(x, (2, 2, 2, 2), value=-1.0), self.smooth)  # see INPUT_BLUR
        logits = self.head(F.relu(self.fc(self.conv(x).flatten(1))))
        return torch.cat([logits[:, :-1], logits[:, -1:] - self.reject_bias], 1)


def judge_path(name: str) -> Path:
    """The shipped judge weights for `mnist`."""
    return Path(str(resources.files("ddpmlab") / "weights" / JUDGE_FILES[name]))


def load_judge(name: str = "mnist") -> tuple[JudgeCNN, dict[str, str]]:
    """The shipped judge (eval mode) and its safetensors metadata (training settings, held-out numbers)."""
    from .features import load_shipped

    return load_shipped(JudgeCNN(), judge_path(name), f"{name} judge", "mnist-judge")  # type: ignore[return-value]


@torch.no_grad()
def judge_probs(net: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, 11) float32 class probabilities of images x: (N, 1, H, W) in [-1, 1], in batches on the CPU."""
    if not len(x):
        return torch.zeros(0, NUM_DIGITS + 1)
    return torch.cat([F.softmax(net(b.float().cpu()).float(), 1) for b in x.split(batch_size)])


def verdicts(probs: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """(N,) long: the top class where it is a digit with probability >= threshold, else REJECT (10)."""
    top, cls = probs.max(1)
    return torch.where((cls < NUM_DIGITS) & (top >= threshold), cls, torch.full_like(cls, REJECT))


def class_balance(verdict: torch.Tensor, num_classes: int = NUM_DIGITS) -> dict[str, Any]:
    """Recognizable share, per-digit counts among recognizable samples, rejects and the deviation from uniform.

    verdict: (N,) long in [0, num_classes] (num_classes = reject). Deviations are over the R recognizable
    samples (nan when R = 0); chi2_p is the upper tail of chi^2 with num_classes - 1 degrees of freedom.
    """
    n = len(verdict)
    counts = torch.bincount(verdict.long().cpu(), minlength=num_classes + 1)[: num_classes + 1]
    digits = counts[:num_classes].double()
    r = int(digits.sum())
    out: dict[str, Any] = {"n": n, "recognizable": r, "recognizable_share": r / n if n else float("nan"),
                           "rejects": int(counts[num_classes]), "counts": [int(c) for c in digits]}
    if r == 0:
        return {**out, "max_abs_deviation": float("nan"), "total_variation": float("nan"),
                "chi2": float("nan"), "chi2_p": float("nan")}
    q, u = digits / r, 1.0 / num_classes
    expected = r * u
    chi2 = float(((digits - expected) ** 2 / expected).sum())
    from scipy.stats import chi2 as chi2_dist

    return {**out, "max_abs_deviation": float((q - u).abs().max()), "total_variation": float(0.5 * (q - u).abs().sum()),
            "chi2": chi2, "chi2_p": float(chi2_dist.sf(chi2, num_classes - 1))}


def heldout_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's 1,000 held-out real digits (the last 100 of each digit in mnist-5k) and their labels."""
    from ..config import DataConfig
    from ..data import load_dataset
    from .features import mnist_5k_heldout

    d = load_dataset(DataConfig(name="mnist-5k"), "train")
    assert d.y is not None
    mask = mnist_5k_heldout(d.y)
    return d.x[mask], d.y[mask]


def pure_noise(n: int, seed: int = 0) -> torch.Tensor:
    """n noise images in [-1, 1]: half standard Gaussian (clamped), half uniform."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n - n // 2, 1, 28, 28, generator=gen).clamp(-1, 1)
    return torch.cat([g, torch.rand(n // 2, 1, 28, 28, generator=gen) * 2 - 1])


@dataclass
class Judge:
    """A loaded judge: score(samples) gives share and balance; calibration() its ceiling and floors."""

    name: str
    net: nn.Module
    meta: dict[str, str] = field(default_factory=dict)
    threshold: float = THRESHOLD
    digest: str = ""  # the first 12 hex digits of the weights file's sha256
    _calibration: dict[str, Any] | None = None

    def verdicts(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) verdicts of images x (digit, or 10 = reject)."""
        return verdicts(judge_probs(self.net, x), self.threshold)

    def score(self, x: torch.Tensor) -> dict[str, Any]:
        """class_balance of the verdicts on images x: (N, 1, H, W) in [-1, 1]."""
        return class_balance(self.verdicts(x))

    def calibration(self, per_kind: int = 100, seed: int = 1) -> dict[str, Any]:
        """Ceiling (held-out real digits), floors (pure noise; held-out negatives, also per kind), accuracy."""
        if self._calibration is None:
            from .negatives import KINDS, make_negatives

            x, y = heldout_digits()
            probs = judge_probs(self.net, x)
            v = verdicts(probs, self.threshold)
            neg, kind = make_negatives(x, y, per_kind * len(KINDS), torch.Generator().manual_seed(seed))
            vn = self.verdicts(neg)
            self._calibration = {
                "real_share": float((v < REJECT).double().mean()),
                "real_correct_share": float((v == y).double().mean()),
                "real_accuracy": float((probs[:, :NUM_DIGITS].argmax(1) == y).double().mean()),
                "real_n": len(x), "noise_share": float((self.verdicts(pure_noise(1000)) < REJECT).double().mean()),
                "negatives_share": float((vn < REJECT).double().mean()), "negatives_n": len(neg),
                "negatives_share_by_kind": {k: float((vn[kind == i] < REJECT).double().mean())
                                            for i, k in enumerate(KINDS)}}
        return self._calibration

    def report(self, x: torch.Tensor) -> dict[str, Any]:
        """What eval.json holds: the samples' score, the calibration, the threshold and the judge's file."""
        return {**self.score(x), "threshold": self.threshold, "calibration": self.calibration(),
                "judge": JUDGE_FILES[self.name], "judge_sha256": self.digest}


def judge_for(dataset: str, item_shape: tuple[int, ...]) -> Judge | None:
    """The shipped judge for a dataset of 1-channel images, or None where there is none."""
    if dataset not in DATASET_JUDGE or item_shape[0] != 1:
        return None
    import hashlib

    name = DATASET_JUDGE[dataset]
    net, meta = load_judge(name)
    return Judge(name, net, meta, digest=hashlib.sha256(judge_path(name).read_bytes()).hexdigest()[:12])


def _pct(v: float) -> str:
    return "nan" if math.isnan(v) else f"{100 * v:.1f}%"


def judge_markdown(j: dict[str, Any]) -> list[str]:
    """eval.md's section for a judge report (Judge.report)."""
    c = j["calibration"]
    counts, k = j["counts"], len(j["counts"])
    return ["", "## Recognizable digits", "",
            f"A judge CNN with an 11th \"not a digit\" class (`{j['judge']}`) calls a sample recognizable when its "
            f"top class is a digit with probability >= {j['threshold']:g}. Recognizable share: "
            f"**{_pct(j['recognizable_share'])}** ({j['recognizable']} of {j['n']}); ceiling on {c['real_n']} held-out "
            f"real digits {_pct(c['real_share'])}, floor on pure noise {_pct(c['noise_share'])} and on "
            f"{c['negatives_n']} generated negatives {_pct(c['negatives_share'])}.", "",
            "| | " + " | ".join(str(d) for d in range(k)) + " | reject |", "|---|" + "---|" * (k + 1),
            "| samples | " + " | ".join(str(v) for v in counts) + f" | {j['rejects']} |", "",
            f"Class balance among the recognizable samples (uniform: 1/{k} each): max |share - 1/{k}| "
            f"= {j['max_abs_deviation']:.4f}, total variation {j['total_variation']:.4f}, chi^2 = {j['chi2']:.1f} "
            f"({k - 1} dof, p = {j['chi2_p']:.3g})."]


def judge_summary(j: dict[str, Any]) -> str:
    """One line for the eval log: recognizable share with its ceiling and floors, and the class balance."""
    c = j["calibration"]
    return (f"recognizable share {_pct(j['recognizable_share'])} (real digits {_pct(c['real_share'])}, noise "
            f"{_pct(c['noise_share'])}, negatives {_pct(c['negatives_share'])}); digits {j['counts']}, "
            f"{j['rejects']} rejects; balance max dev {j['max_abs_deviation']:.3f}, TV {j['total_variation']:.3f}")

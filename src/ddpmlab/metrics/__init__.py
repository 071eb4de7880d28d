"""Sample-quality metrics: stateless functions on features or points, one job per file.

    frechet.py           FID: Frechet distance between Gaussians fitted to features (Heusel et al. 2017)
    kid.py               KID: unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018)
    precision_recall.py  improved precision and recall with k-NN balls (Kynkaanniemi et al. 2019)
    toy.py               exact 2D metrics: energy distance, sliced Wasserstein, mode coverage of gmm8
    accuracy.py          classifier accuracy of conditional samples, overall and per class
    nll.py               negative log-likelihood in bits/dim from the variational bound (Ho et al. 2020, eq. 5)
    features.py          feature extractors: shipped 28x28 classifiers, Inception-v3, pixel projection
    judge.py             MNIST judge with a "not a digit" class: recognizable share and class balance
    negatives.py         generated "not a digit" images: the judge's reject class and its floor

Imported lazily, so `import ddpmlab.metrics` stays cheap (scipy and torchvision load on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "feature_stats": "frechet", "frechet_distance": "frechet", "fid_from_features": "frechet",
    "kid": "kid", "mmd2_unbiased": "kid",
    "precision_recall": "precision_recall", "knn_radii": "precision_recall",
    "energy_distance": "toy", "sliced_wasserstein": "toy", "mode_coverage": "toy",
    "class_accuracy": "accuracy",
    "nll_bits_per_dim": "nll",
    "select_features": "features", "FeatureExtractor": "features", "load_classifier": "features",
    "Judge": "judge", "judge_for": "judge", "load_judge": "judge", "class_balance": "judge",
    "make_negatives": "negatives",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'ddpmlab.metrics' has no attribute {name!r}")

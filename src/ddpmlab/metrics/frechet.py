"""Frechet distance between Gaussians fitted to features: FID (Heusel et al. 2017, eq. 6; Dowson & Landau 1982).

Notation:
    phi      features (N, F) of one image set
    mu, S    their mean (F,) and covariance (F, F), float64, S with the unbiased 1/(N - 1) normalisation
    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-6  # added to both diagonals when S_1 S_2 is (numerically) singular, as pytorch-fid does
IMAG_TOL = 1e-3  # largest tolerated imaginary part on the diagonal of the matrix square root


def feature_stats(phi: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu: (F,), S: (F, F)) of features phi: (N, F), computed in float64."""
    x = np.asarray(phi.detach().cpu().numpy() if isinstance(phi, torch.Tensor) else phi, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"feature_stats needs (N >= 2, F) features, got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray | None:
    """scipy's matrix square root, or None when it is not finite or does not square back to a."""
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Matrix is singular and may not have a square root": checked below
        root = linalg.sqrtm(a)
    if not np.isfinite(root).all():
        return None
    scale = max(np.abs(a).max(), 1e-300)
    if np.abs(root @ root - a).max() > 1e-4 * scale:
        return None
    return root


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = EPS) -> float:
    """Heusel et al. 2017, eq. 6: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)); float64 throughout.

    sqrt(S1 S2) by scipy.linalg.sqrtm; if it fails (singular product), eps I is added to both
    covariances. Imaginary parts of the root up to IMAG_TOL (round-off) are dropped, larger ones raise.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    root = _sqrtm(s1 @ s2)
    if root is None:
        offset = np.eye(len(mu1)) * eps
        root = _sqrtm((s1 + offset) @ (s2 + offset))
        if root is None:
            raise ValueError("the covariance product has no usable square root even with an eps offset; "
                             "are the features finite and is N larger than a handful?")
    if np.iscomplexobj(root):
        worst = np.abs(np.diagonal(root).imag).max()
        if worst > IMAG_TOL:
            raise ValueError(f"the square root of S1 S2 has an imaginary component of {worst:.3g}; "
                             "the feature statistics are numerically unstable (too few samples?)")
        root = root.real
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root), 0.0))


def fid_from_features(phi_a: torch.Tensor | np.ndarray, phi_b: torch.Tensor | np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (N, F) and (M, F)."""
    return frechet_distance(*feature_stats(phi_a), *feature_stats(phi_b))

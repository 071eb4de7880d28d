"""Exact sample-based metrics for 2D (and other low-dimensional) data: no feature network in between.

Notation:
    A, B         samples (N, D) and (M, D) of the two distributions; A', B' independent copies
    theta        a unit direction; P_theta the law of theta . X (a 1D projection)
    W_2(P, Q)    the 2-Wasserstein distance; in 1D, the L2 distance between quantile functions
Energy distance (Szekely & Rizzo 2013): 2 E|A - B| - E|A - A'| - E|B - B'|.
Sliced Wasserstein (Rabin et al. 2011; Bonneel et al. 2015): SW_2 = (E_theta W_2^2(P_theta, Q_theta))^(1/2).
Mode coverage of gmm8 (the protocol of Srivastava et al. 2017, VEEGAN, Sec. 5.1): a sample is "high quality"
when it lies within 3 std of a mode's centre; a mode counts as covered when it receives at least
`min_share` of its expected share of such samples.
"""

from __future__ import annotations

import math

import torch

# data.toy_points("gmm8"): 8 equally weighted modes on a circle of radius 2, std 0.1 each.
GMM8_RADIUS, GMM8_STD, GMM8_MODES = 2.0, 0.1, 8


def gmm8_means() -> torch.Tensor:
    """(8, 2) float64 centres of the gmm8 toy distribution."""
    angle = torch.arange(GMM8_MODES, dtype=torch.float64) * (2 * math.pi / GMM8_MODES)
    return GMM8_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Székely energy distance 2 E|A - B| - E|A - A'| - E|B - B'| for samples a: (N, D), b: (M, D).

    This is the V-statistic: every mean runs over all pairs, the zero diagonal included, so the
    value is never negative, and for equal laws its expectation is (1/N + 1/M) E|A - A'|, not 0.
    """
    a, b = a.to(torch.float64), b.to(torch.float64)

    def mean_dist(x: torch.Tensor, y: torch.Tensor) -> float:
        # exact pairwise distances (no matmul trick, so |x - x| = 0), in row blocks to bound memory
        exact = "donot_use_mm_for_euclid_dist"
        total = sum(float(torch.cdist(xb, y, compute_mode=exact).sum()) for xb in x.split(1024))
        return total / (x.shape[0] * y.shape[0])

    return float(2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b))


def _directions(dim: int, n: int, seed: int) -> torch.Tensor:
    """(n, dim) unit vectors: evenly spaced angles in [0, pi) for dim = 2 (a deterministic quadrature), else random."""
    if dim == 2:
        angle = torch.arange(n, dtype=torch.float64) * (math.pi / n)
        return torch.stack([angle.cos(), angle.sin()], dim=1)
    v = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def _quantiles(sorted_x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Empirical quantile function of each column of sorted_x: (N, P) at levels in (0, 1); (L, P)."""
    idx = (levels * sorted_x.shape[0]).floor().long().clamp(0, sorted_x.shape[0] - 1)
    return sorted_x[idx]


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = 180, seed: int = 0) -> float:
    """SW_2 between samples a: (N, D) and b: (M, D): the root mean over directions of 1D W_2^2.

    1D W_2^2 is the mean squared gap between the two empirical quantile functions on a grid of
    max(N, M) levels (sorting alone when N = M). Like every sample distance it is > 0 for two
    finite samples of one law; compare with a real-vs-real floor at the same N.
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    theta = _directions(a.shape[1], n_projections, seed)
    pa, pb = (a @ theta.T).sort(dim=0).values, (b @ theta.T).sort(dim=0).values  # (N, P), (M, P)
    if len(pa) != len(pb):
        levels = (torch.arange(max(len(pa), len(pb)), dtype=torch.float64) + 0.5) / max(len(pa), len(pb))
        pa, pb = _quantiles(pa, levels), _quantiles(pb, levels)
    return float((pa - pb).pow(2).mean().sqrt())


def mode_coverage(points: torch.Tensor, means: torch.Tensor | None = None, std: float = GMM8_STD,
                  min_share: float = 0.25) -> dict[str, float | int | list[float]]:
    """Mode statistics of points: (N, 2) against mixture centres means: (K, 2) (default: gmm8's).

    Returns modes_covered (count of modes with >= min_share / K of the samples within 3 std of them),
    mode_fraction (that count / K), high_quality (share of samples within 3 std of some mode) and
    per_mode (each mode's share of all samples, within 3 std).
    """
    means = gmm8_means() if means is None else means.to(torch.float64)
    p = points.to(torch.float64)
    dist = torch.cdist(p, means)  # (N, K)
    nearest_d, nearest = dist.min(dim=1)
    good = nearest_d <= 3 * std
    k = len(means)
    counts = torch.bincount(nearest[good], minlength=k).double()
    share = counts / max(len(p), 1)
    covered = int((share >= min_share / k).sum())
    return {"modes_covered": covered, "modes": k, "mode_fraction": covered / k,
            "high_quality": float(good.double().mean()), "per_mode": [round(float(s), 4) for s in share]}

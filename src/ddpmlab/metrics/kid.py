"""Kernel Inception Distance: unbiased MMD^2 with a cubic polynomial kernel (Binkowski et al. 2018, Sec. 2.3).

Notation:
    X, Y        feature sets (m, F) drawn from the two distributions (one random subset each)
    k(x, y)     (x . y / F + 1)^3, the kernel of Binkowski et al. eq. 5 with d = F
    MMD^2_u     sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
                - 2 sum_{i, j} k(x_i, y_j) / m^2                                   (Gretton et al. 2012, eq. 3)
KID is the mean of MMD^2_u over random subsets; it is unbiased, so it can be (slightly) negative.
"""

from __future__ import annotations

import torch


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x . y / F + 1)^3 for x: (m, F), y: (n, F); (m, n) float64."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """MMD^2_u of Gretton et al. 2012, eq. 3, with the cubic kernel; x, y: (m, F) and (n, F), m, n >= 2."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    term_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(term_x + term_y - 2.0 * k_xy.mean())


def kid(phi_a: torch.Tensor, phi_b: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of MMD^2_u over `subsets` random subsets of min(subset_size, N, M) features each.

    phi_a: (N, F), phi_b: (M, F). The std is over subsets (the spread a reader should expect between
    evaluations), not the standard error of the mean.
    """
    size = min(subset_size, len(phi_a), len(phi_b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(phi_a)} and {len(phi_b)}")
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        ia = torch.randperm(len(phi_a), generator=gen)[:size]
        ib = torch.randperm(len(phi_b), generator=gen)[:size]
        values.append(mmd2_unbiased(phi_a[ia], phi_b[ib]))
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0

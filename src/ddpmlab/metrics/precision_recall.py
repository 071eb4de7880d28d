"""Improved precision and recall with k-NN balls in feature space (Kynkaanniemi et al. 2019, eqs. 1-3).

Notation:
    Phi_r, Phi_g   real and generated features (N, F) and (M, F)
    NN_k(phi, Phi) the distance from phi to its k-th nearest neighbour in Phi (itself excluded), k = 3
    f(phi, Phi)    1 if |phi - phi'| <= NN_k(phi', Phi) for some phi' in Phi, else 0      (eq. 1)
    precision = mean over phi_g of f(phi_g, Phi_r)   (eq. 2)   recall = mean over phi_r of f(phi_r, Phi_g)   (eq. 3)
Distances are computed in row blocks (torch.cdist), so memory stays O(block x N).
"""

from __future__ import annotations

import torch

K = 3  # Kynkaanniemi et al. 2019, Sec. 3: k = 3 for a good precision/recall trade-off
BLOCK = 1024


def knn_radii(phi: torch.Tensor, k: int = K, block: int = BLOCK) -> torch.Tensor:
    """(N,) distance from each row of phi: (N, F) to its k-th nearest other row."""
    if len(phi) <= k:
        raise ValueError(f"k-NN radii with k = {k} need more than {k} points, got {len(phi)}")
    out = []
    for rows in phi.split(block):
        d = torch.cdist(rows, phi)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # k + 1: the point itself is at distance 0
    return torch.cat(out)


def coverage_fraction(query: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, block: int = BLOCK) -> float:
    """Eq. 1 averaged: the fraction of query rows inside at least one ball B(support_j, radii_j)."""
    inside = [(torch.cdist(rows, support) <= radii[None, :]).any(dim=1) for rows in query.split(block)]
    return float(torch.cat(inside).double().mean())


def precision_recall(phi_real: torch.Tensor, phi_gen: torch.Tensor, k: int = K) -> tuple[float, float]:
    """(precision, recall) of generated features phi_gen: (M, F) against real phi_real: (N, F), eqs. 2-3.

    Use sets of equal size: the k-NN balls grow as a set shrinks, which inflates the other side's score.
    """
    real, gen = phi_real.to(torch.float32), phi_gen.to(torch.float32)
    precision = coverage_fraction(gen, real, knn_radii(real, k))
    recall = coverage_fraction(real, gen, knn_radii(gen, k))
    return precision, recall

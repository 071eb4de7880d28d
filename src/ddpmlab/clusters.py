"""Self-guidance without labels: k-means clusters of the training data stand in for class labels.

Classifier-free guidance sharpens a conditional model p(x | c) far more than anything does an unconditional
p(x) trained for the same minutes, but it needs labels. Hu et al. (2023, "Self-Guided Diffusion Models") get
them without annotation by clustering the data's features. ddpmlab clusters the first 50 principal components
of the training images (all dimensions of smaller data) with k-means (`data.clusters = K`):

    c_n = argmin_k || P(x_n - mean) - mu_k ||^2         P: the top PCA directions, mu_k: the K centroids

The network then trains as a class-conditional one on (x_n, c_n), with label dropout for the null label that
guidance needs. Sampling draws each sample's cluster with the frequency it has in the data, p(c) = N_c / N, and
guides within it, so the samples follow

    p(x) = sum_c p(c) p(x | c)

the same distribution an unconditional model targets, with guidance acting inside each cluster. No label of the
dataset is read at any point.

Each sample's cluster comes from a low-discrepancy sequence, u_i = frac(offset(seed) + i * g) with g the golden
ratio's fractional part, pushed through the inverse CDF of p(c): sample i keeps its cluster whatever n is, and any
n samples hold each cluster within a few of n * p(c) times.
"""

from __future__ import annotations

import math

import torch

PCA_DIMS = 50  # principal components the clusters are found in (all dimensions of smaller data)
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
SEED_STEP = 2.0 ** 0.5 - 1.0  # another irrational: each sample.seed shifts the sequence by a different offset


def cluster_names(k: int) -> tuple[str, ...]:
    """Class names of a clustered run: 'cluster 0' ... 'cluster K-1'."""
    return tuple(f"cluster {i}" for i in range(k))


def fit_clusters(x: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """(N,) long cluster index of each item of x (N, ...): k-means (scikit-learn, 3 restarts) on the first
    PCA_DIMS principal components of the flattened items. Deterministic for a given seed."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if not 2 <= k <= len(x):
        raise ValueError(f"data.clusters = {k} needs between 2 and {len(x)} clusters (at most one per item)")
    feats = x.detach().flatten(1).double().cpu().numpy()
    if feats.shape[1] > PCA_DIMS:
        feats = PCA(PCA_DIMS, random_state=seed).fit_transform(feats)
    labels = KMeans(k, n_init=3, random_state=seed).fit(feats).labels_
    return torch.as_tensor(labels, dtype=torch.long)


def cluster_counts(labels: torch.Tensor, k: int) -> tuple[int, ...]:
    """How many training items fall in each of the k clusters."""
    return tuple(int(c) for c in torch.bincount(labels.cpu(), minlength=k)[:k])


def draw_clusters(counts: tuple[int, ...] | list[int], n: int, seed: int = 0) -> torch.Tensor:
    """(n,) long clusters for samples 0..n-1: sample i takes the cluster whose share of the cumulative frequency
    holds u_i = frac(seed * SEED_STEP + (i + 1) * GOLDEN). Each cluster appears about n * N_c / N times."""
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("cluster counts must not all be zero")
    cdf = torch.tensor(counts, dtype=torch.float64).cumsum(0) / total
    i = torch.arange(1, n + 1, dtype=torch.float64)
    u = torch.remainder((seed % 1_000_003) * SEED_STEP + i * GOLDEN, 1.0)
    return torch.searchsorted(cdf, u, right=True).clamp_(max=len(counts) - 1)


__all__ = ["cluster_counts", "cluster_names", "draw_clusters", "fit_clusters"]

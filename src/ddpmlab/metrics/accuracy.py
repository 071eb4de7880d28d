"""Classifier accuracy of class-conditional samples: does a sample of class c look like a c?

Notation:
    y        the labels the samples were requested with (N,)
    y_hat    argmax of a fixed classifier's logits on the samples (N,)
    acc      mean(y_hat == y); acc_c the same over the samples requested as class c
A proxy for conditional fidelity in the spirit of the Classification Accuracy Score (Ravuri & Vinyals 2019),
measured the other way round: a classifier trained on real data judges generated data.
"""

from __future__ import annotations

import torch


def class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float | list[float | None]]:
    """Overall and per-class accuracy of logits: (N, K) against requested labels: (N,); None for absent classes."""
    pred = logits.argmax(dim=1).cpu()
    labels = labels.cpu()
    hit = (pred == labels).double()
    per_class: list[float | None] = []
    for c in range(num_classes):
        sel = labels == c
        per_class.append(round(float(hit[sel].mean()), 4) if bool(sel.any()) else None)
    return {"accuracy": float(hit.mean()) if len(hit) else float("nan"), "per_class": per_class}

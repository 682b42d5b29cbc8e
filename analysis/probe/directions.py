"""Directions in a hook's activation space: the difference of class means (each class against the rest), usable
as steering vectors, computed in one pass over the items in the stored values' space."""

from __future__ import annotations

import torch

from analysis.probe.problems import Features


def diff_in_means(feats: Features, y, n_classes: int) -> torch.Tensor:
    """``(n_classes, d)`` float32: mean of the items of class c minus the mean of all other items."""
    y = torch.as_tensor(y, dtype=torch.long)
    sums = torch.zeros((n_classes, feats.d), dtype=torch.float64)
    for items, x in feats.chunks():  # per chunk in float32 (a float64 copy would double the pass's memory)
        sums += torch.zeros((n_classes, feats.d)).index_add_(0, y[items], x).double()
    counts = torch.bincount(y, minlength=n_classes).double()
    total = sums.sum(0)
    rest = (total - sums) / (counts.sum() - counts).clamp_min(1)[:, None]
    return (sums / counts.clamp_min(1)[:, None] - rest).float()

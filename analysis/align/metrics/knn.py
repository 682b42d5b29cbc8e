"""Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation Hypothesis",
platonic-rep ``mutual_knn``): for each row, the fraction of its k nearest neighbours (cosine similarity of
L2-normalised rows, self excluded) that are the same in both representations, averaged over rows.

Neighbours are found block by block (``block`` rows against all N at a time), so memory is O(N·k + block·N),
not N²; platonic-rep builds the N × N similarity and two N × N masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.align.registry import AlignmentMetric, register_metric
from analysis.align.rsa import as_float64
from shards.config import check_positive


def nearest_neighbors(x: torch.Tensor, k: int, block: int = 2048) -> torch.Tensor:
    """Indices (N, k) of each row's k most similar other rows (dot product of the given rows)."""
    n = x.shape[0]
    out = torch.empty((n, k), dtype=torch.int64)
    for start in range(0, n, block):
        sims = x[start:start + block] @ x.T
        rows = torch.arange(start, min(start + block, n))
        sims[torch.arange(len(rows)), rows] = -torch.inf
        out[start:start + block] = torch.topk(sims, k, dim=1).indices
    return out


def knn_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean fraction of shared neighbours of two (N, k) index sets."""
    k = a.shape[1]
    shared = 0
    for start in range(0, a.shape[0], 8192):  # bounded (rows, k, k) comparison
        aa, bb = a[start:start + 8192], b[start:start + 8192]
        shared += int((aa[:, :, None] == bb[:, None, :]).any(dim=2).sum())
    return shared / (a.shape[0] * k)


def _unit(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), -1)))
    return torch.nn.functional.normalize(t, dim=1)


def mutual_knn(X, Y, k: int = 10, block: int = 2048) -> float:
    """Mutual k-NN alignment of two representations of the same N rows (numpy or torch).

    Example::

        mutual_knn(vision_feats, text_feats, k=10)
    """
    x, y = as_float64(X), as_float64(Y)
    if len(x) != len(y):
        raise ValueError(f"mutual k-NN compares the same rows: X has {len(x)}, Y has {len(y)}")
    if not 0 < k < len(x):
        raise ValueError(f"k must be between 1 and N - 1 = {len(x) - 1}, got {k}")
    return knn_overlap(nearest_neighbors(_unit(x), k, block), nearest_neighbors(_unit(y), k, block))


@dataclass
class KnnOptions:
    """Options of mutual k-NN."""

    k: int = 10
    """Neighbours per row."""

    block: int = 2048
    """Rows per block of the neighbour search (memory: block x N similarities)."""

    def check(self) -> None:
        check_positive(self, "k", "block")


def _neighbours(x: np.ndarray, o: KnnOptions) -> torch.Tensor:
    """One view's neighbour lists (computed once, shared by all its pairs)."""
    if not 0 < o.k < len(x):
        raise ValueError(f"--k must be between 1 and the number of rows - 1 ({len(x) - 1})")
    return nearest_neighbors(_unit(x), o.k, o.block)


def knn_null(x: np.ndarray, y: np.ndarray, perms: np.ndarray, options: KnnOptions) -> tuple[float, np.ndarray]:
    """Mutual k-NN and its values with y's rows permuted: row i of the permuted y is y[p[i]], whose neighbours
    are those of y[p[i]] renamed by p's inverse (the neighbour search runs once)."""
    nx = nearest_neighbors(_unit(x), options.k, options.block)
    ny = nearest_neighbors(_unit(y), options.k, options.block)
    score = knn_overlap(nx, ny)
    null = []
    for p in perms:
        inv = np.empty_like(p)
        inv[p] = np.arange(len(p))
        null.append(knn_overlap(nx, torch.as_tensor(inv)[ny[torch.as_tensor(p)]]))
    return score, np.asarray(null)


register_metric(AlignmentMetric("mutual_knn", mutual_knn,
                                "mean fraction of shared k nearest neighbours (cosine, self excluded)",
                                "Huh et al. 2024 (minyoungg/platonic-rep metrics.mutual_knn)",
                                prepare=_neighbours, compare=lambda a, b, o: knn_overlap(a, b), options=KnnOptions,
                                null=knn_null, command="knn"))

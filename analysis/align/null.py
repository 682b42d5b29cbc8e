"""A permutation null for model–model similarity: each score beside the scores of the same two views with the
rows (stimuli) of the second permuted, so that a CKA of 0.6 or a k-NN overlap of 0.2 can be read against what
unrelated rows of these widths and this many rows give (raw scores mislead across widths and sample sizes).

Each metric permutes what it prepared once instead of recomputing: CKA's centred Gram matrices (a permutation of
the rows permutes both axes of the centred Gram; its norm does not change), k-NN's neighbour lists (relabelled
through the inverse permutation). ``tests/unit/analysis/test_align_null.py`` checks each against the metric
recomputed on permuted rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from analysis.align.metrics.cka import _center_gram, gram_rbf
from analysis.align.metrics.cknna import KernelView, cknna_views, kernel_view
from analysis.align.metrics.knn import _unit, knn_overlap, nearest_neighbors

MAX_ROWS = 10_000  #: N × N Gram matrices beyond this do not fit a worker's memory comfortably


@dataclass
class NullResult:
    score: float
    null_mean: float
    null_sd: float
    p_value: float  #: (1 + #null >= score) / (1 + permutations): one-sided, never 0
    permutations: int

    def to_row(self) -> dict:
        return {"null_mean": self.null_mean, "null_sd": self.null_sd, "p_value": self.p_value,
                "permutations": self.permutations}


def _cka_null(x: np.ndarray, y: np.ndarray, perms: np.ndarray, options) -> tuple[float, np.ndarray]:
    """CKA (linear or RBF, biased or debiased) and its values with y's rows permuted."""
    gram = (lambda a: a @ a.T) if options.kernel == "linear" else (lambda a: gram_rbf(a, options.rbf_threshold))
    cx, cy = _center_gram(gram(x), options.debiased), _center_gram(gram(y), options.debiased)
    den = float(np.sqrt(np.sum(cx * cx) * np.sum(cy * cy)))
    score = float(np.sum(cx * cy)) / den
    null = np.array([float(np.sum(cx * cy[np.ix_(p, p)])) for p in perms]) / den
    return score, null


def _knn_null(x: np.ndarray, y: np.ndarray, perms: np.ndarray, options) -> tuple[float, np.ndarray]:
    """Mutual k-NN and its values with y's rows permuted: row i of the permuted y is y[p[i]], whose neighbours
    are those of y[p[i]] renamed by p's inverse."""
    nx = nearest_neighbors(_unit(x), options.k, options.block)
    ny = nearest_neighbors(_unit(y), options.k, options.block)
    score = knn_overlap(nx, ny)
    null = []
    for p in perms:
        inv = np.empty_like(p)
        inv[p] = np.arange(len(p))
        null.append(knn_overlap(nx, torch.as_tensor(inv)[ny[torch.as_tensor(p)]]))
    return score, np.asarray(null)


def _cknna_null(x: np.ndarray, y: np.ndarray, perms: np.ndarray, options) -> tuple[float, np.ndarray]:
    """CKNNA and its values with y's rows permuted: the permuted view's Gram matrix and neighbour mask are the
    original ones with both axes permuted."""
    va, vb = kernel_view(x, options.k), kernel_view(y, options.k)
    null = [cknna_views(va, KernelView(vb.gram[np.ix_(p, p)], vb.mask[np.ix_(p, p)])) for p in perms]
    return cknna_views(va, vb), np.asarray(null)


#: metric name -> (x, y, permutations, options) -> (score, null scores)
NULLS: dict[str, Callable[..., tuple[float, np.ndarray]]] = {"cka": _cka_null, "mutual_knn": _knn_null,
                                                             "cknna": _cknna_null}


def permutations(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` permutations of ``n`` rows, the same for every pair of a run (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)]) if count else np.zeros((0, n), dtype=np.int64)


def permutation_null(metric: str, x: np.ndarray, y: np.ndarray, perms: np.ndarray, options) -> NullResult:
    """``metric``'s score of (x, y) against its values over ``perms`` of y's rows."""
    score, null = NULLS[metric](x, y, perms, options)
    return NullResult(score=score, null_mean=float(null.mean()), null_sd=float(null.std(ddof=1)),
                      p_value=float((1 + np.sum(null >= score - 1e-12)) / (1 + len(null))), permutations=len(null))

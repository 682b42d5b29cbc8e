"""Kendall's τ_A: (concordant − discordant pairs) / all pairs, no tie correction in the denominator (Nili et
al. 2014; rsatoolbox ``tau-a``). Computed from scipy's O(n log n) τ_B and the tie counts:
τ_A = τ_B · √((n₀ − n₁)(n₀ − n₂)) / n₀."""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau

from analysis.align.comparisons.common import mean_row, rank_rows
from analysis.align.registry import Comparison, register_comparison


def _tied_pairs(v: np.ndarray) -> int:
    _, counts = np.unique(v, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def tau_a(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ_A of two vectors."""
    n0 = a.size * (a.size - 1) // 2
    n1, n2 = _tied_pairs(a), _tied_pairs(b)
    if n1 == n0 or n2 == n0:
        return 0.0  # one vector is constant: no pair is concordant or discordant
    tb = kendalltau(a, b, variant="b").statistic
    return float(min(1.0, max(-1.0, tb * np.sqrt(float(n0 - n1) * float(n0 - n2)) / n0)))


def _score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[tau_a(x, y) for y in b] for x in a])


def _pool(v: np.ndarray) -> np.ndarray:
    return mean_row(rank_rows(v))


register_comparison(Comparison("kendall_a", _score, _pool, "tau-a",
                               "Kendall tau-a: (concordant - discordant) / all pairs", rank_based=True))

"""Spearman's ρ_A: the expected rank correlation under random tie-breaking, 12·Σ r̃ᵃ r̃ᵇ / (n³ − n) with
centred average ranks (Nili et al. 2014; rsatoolbox ``rho-a``). Unlike ``spearman`` it does not reward a model
for predicting ties."""

from __future__ import annotations

import numpy as np

from analysis.align.comparisons.common import centered, dot_scores, mean_row, rank_rows
from analysis.align.registry import Comparison, register_comparison


def _embed(v: np.ndarray) -> np.ndarray:
    n = v.shape[1]
    return centered(rank_rows(v)) * np.sqrt(12.0 / (n ** 3 - n))


def _pool(v: np.ndarray) -> np.ndarray:
    return mean_row(rank_rows(v))


register_comparison(Comparison("rho_a", dot_scores(_embed), _pool, "rho-a",
                               "Spearman rho-a: 12 * sum of centred-rank products / (n^3 - n)", embed=_embed,
                               rank_based=True))

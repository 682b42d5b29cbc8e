"""Spearman rank correlation of the dissimilarity vectors, ties at their average rank (rsatoolbox
``spearman``, scipy ``spearmanr``, Net2Brain ``spearman``)."""

from __future__ import annotations

import numpy as np

from analysis.align.comparisons.common import centered, dot_scores, mean_row, rank_rows, unit_rows
from analysis.align.registry import Comparison, register_comparison


def _embed(v: np.ndarray) -> np.ndarray:
    return unit_rows(centered(rank_rows(v)))


def _pool(v: np.ndarray) -> np.ndarray:
    return mean_row(rank_rows(v))


register_comparison(Comparison("spearman", dot_scores(_embed), _pool, "spearman",
                               "Spearman rank correlation of the RDM vectors (average ranks for ties)",
                               embed=_embed, rank_based=True))

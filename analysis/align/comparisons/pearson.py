"""Pearson correlation of the dissimilarity vectors (rsatoolbox ``corr``)."""

from __future__ import annotations

import numpy as np

from analysis.align.comparisons.common import centered, dot_scores, mean_row, unit_rows
from analysis.align.registry import Comparison, register_comparison


def _embed(v: np.ndarray) -> np.ndarray:
    return unit_rows(centered(v))


def _pool(v: np.ndarray) -> np.ndarray:
    z = centered(v)
    z = z / z.std(axis=1, keepdims=True)
    m = mean_row(z)
    return m - m.min() + 0.01  # rsatoolbox's shift to positive dissimilarities (no effect on the score)


register_comparison(Comparison("pearson", dot_scores(_embed), _pool, "corr",
                               "Pearson correlation of the RDM vectors", embed=_embed))

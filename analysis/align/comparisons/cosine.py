"""Cosine similarity of the dissimilarity vectors (rsatoolbox ``cosine``)."""

from __future__ import annotations

import numpy as np

from analysis.align.comparisons.common import dot_scores, mean_row, unit_rows
from analysis.align.registry import Comparison, register_comparison


def _pool(v: np.ndarray) -> np.ndarray:
    return mean_row(v / np.sqrt(np.mean(v ** 2, axis=1, keepdims=True)))


register_comparison(Comparison("cosine", dot_scores(unit_rows), _pool, "cosine",
                               "cosine similarity of the RDM vectors", embed=unit_rows,
                               needs_variance=False))

"""What several comparison methods share: cosine of embedded vectors, rsatoolbox's pooling helpers."""

from __future__ import annotations

import numpy as np

from analysis.align.vectors import average_ranks


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero (rsatoolbox scores it 0, not NaN)."""
    norms = np.sqrt(np.einsum("ij,ij->i", v, v))
    return v / np.where(norms > 0, norms, 1.0)[:, None]


def centered(v: np.ndarray) -> np.ndarray:
    return v - v.mean(axis=1, keepdims=True)


def rank_rows(v: np.ndarray) -> np.ndarray:
    return np.stack([average_ranks(r) for r in v])


def dot_scores(embed):
    """The score of methods that are a dot product of embedded vectors."""

    def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return embed(a) @ embed(b).T

    return score


def mean_row(v: np.ndarray) -> np.ndarray:
    return v.mean(axis=0)

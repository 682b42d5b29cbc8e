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
    """The score of methods that are a dot product of embedded vectors. The second side (a run's brain RDMs,
    the same array for every hook) is embedded once: ranking 15 subjects' RDMs again for each of 50 hooks was a
    third of an RSA sweep's time (issue 39)."""
    cache: dict[int, tuple] = {}  #: id -> (the array, its embedding): held, so its id is not reused meanwhile

    def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        hit = cache.get(id(b))
        if hit is None or hit[0] is not b:
            if len(cache) >= 16:  # a run's targets (a few); older runs' arrays are let go
                cache.pop(next(iter(cache)))
            hit = cache[id(b)] = (b, embed(b))
        return embed(a) @ hit[1].T

    return score


def mean_row(v: np.ndarray) -> np.ndarray:
    return v.mean(axis=0)

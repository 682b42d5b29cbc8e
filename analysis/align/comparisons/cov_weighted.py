"""Whitened comparisons (Diedrichsen et al. 2021; rsatoolbox ``cosine_cov`` and ``corr_cov``): the cosine (or
correlation) of RDMs after whitening by the covariance their entries would have under isotropic noise.

rsatoolbox computes it as the cosine of the double-centred second-moment matrices G = −½·H D H (Frobenius
inner product). For the noise ceiling, rsatoolbox's ``boot_noise_ceiling`` pools subjects with
``rsatoolbox.util.inference_util.pool_rdm``, which scales RDMs as for ``cosine`` / ``corr`` (not by their
whitened norm, as ``rsatoolbox.util.pooling.pool_rdm`` does); the pools here are that function's.
"""

from __future__ import annotations

import numpy as np

from analysis.align.comparisons.common import centered, dot_scores, mean_row
from analysis.align.registry import Comparison, register_comparison
from analysis.align.vectors import n_from_length


def second_moments(v: np.ndarray) -> np.ndarray:
    """``(k, M)`` condensed RDMs as ``(k, M + N)`` whitened vectors: the upper triangle of G = −½·H D H times √2,
    then its diagonal (so that the dot product of two is the Frobenius inner product of their G)."""
    n = n_from_length(v.shape[1])
    i, j = np.triu_indices(n, 1)
    out = np.empty((v.shape[0], v.shape[1] + n))
    for r, row in enumerate(v):
        d = np.zeros((n, n))
        d[i, j] = row
        d[j, i] = row
        g = -0.5 * d
        g -= g.mean(axis=0, keepdims=True)
        g -= g.mean(axis=1, keepdims=True)
        out[r, :v.shape[1]] = g[i, j] * np.sqrt(2.0)
        out[r, v.shape[1]:] = np.diag(g)
    return out


def _unit(w: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", w, w))
    return w / np.where(norms > 0, norms, 1.0)[:, None]


def _embed_cosine(v: np.ndarray) -> np.ndarray:
    return _unit(second_moments(v))


def _embed_corr(v: np.ndarray) -> np.ndarray:
    return _unit(second_moments(centered(v)))


def _pool_cosine(v: np.ndarray) -> np.ndarray:
    return mean_row(v / np.sqrt(np.mean(v ** 2, axis=1, keepdims=True)))


def _pool_corr(v: np.ndarray) -> np.ndarray:
    z = centered(v)
    z = z / z.std(axis=1, keepdims=True)
    m = mean_row(z)
    return m - m.min()


register_comparison(Comparison("cosine_cov", dot_scores(_embed_cosine), _pool_cosine, "cosine_cov",
                               "whitened cosine similarity (cosine of the double-centred second moments)",
                               embed=_embed_cosine, entrywise=False, needs_variance=False))
register_comparison(Comparison("corr_cov", dot_scores(_embed_corr), _pool_corr, "corr_cov",
                               "whitened correlation (the RDM vectors centred, then whitened cosine)",
                               embed=_embed_corr, entrywise=False))

"""Centered kernel alignment (Kornblith et al. 2019): linear CKA, biased or debiased (the unbiased HSIC
estimator of Song et al. 2012, as Kornblith's ``feature_space_linear_cka(debiased=True)``), and RBF CKA with
the median heuristic (``gram_rbf``: σ² = threshold² × the median squared distance over the whole Gram matrix).

Linear CKA is computed in feature space, from X̃ᵀỸ (d_x × d_y), never from an N × N Gram matrix; streamed, it
needs only the moments of ``analysis.align.moments``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from simple_parsing import field

from analysis.align.moments import PairMoments, pair_moments
from analysis.align.registry import AlignmentMetric, register_metric
from analysis.align.rsa import as_float64
from shards.config import check_choices
from shards.errors import ConfigError


def _debiased(dot: float, rows: float, sq_a: float, sq_b: float, n: int) -> float:
    """Kornblith's ``_debiased_dot_product_similarity_helper`` on the feature-space terms."""
    return dot - n / (n - 2.0) * rows + sq_a * sq_b / ((n - 1.0) * (n - 2.0))


def cka_from_moments(m: PairMoments, debiased: bool = False) -> float:
    """Linear CKA of two centred views from their moments."""
    dot_xy = float(np.sum(m.xty ** 2))
    dot_xx = float(np.sum(m.xtx ** 2))
    dot_yy = float(np.sum(m.yty ** 2))
    if debiased:
        if m.n < 4:
            raise ValueError(f"debiased CKA needs at least 4 rows, got {m.n}")
        sq_x, sq_y = float(np.trace(m.xtx)), float(np.trace(m.yty))
        dot_xy = _debiased(dot_xy, m.rows_xy, sq_x, sq_y, m.n)
        dot_xx = _debiased(dot_xx, m.rows_xx, sq_x, sq_x, m.n)
        dot_yy = _debiased(dot_yy, m.rows_yy, sq_y, sq_y, m.n)
    den = np.sqrt(dot_xx * dot_yy)
    return float(dot_xy / den) if den > 0 else float("nan")


def _center_gram(k: np.ndarray, unbiased: bool) -> np.ndarray:
    """Kornblith's ``center_gram``: double centring, or the U-statistic centring of the unbiased HSIC."""
    k = k.copy()
    n = k.shape[0]
    if unbiased:
        np.fill_diagonal(k, 0)
        means = k.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        k -= means[:, None]
        k -= means[None, :]
        np.fill_diagonal(k, 0)
    else:
        means = k.mean(axis=0)
        means -= means.mean() / 2
        k -= means[:, None]
        k -= means[None, :]
    return k


def gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """RBF Gram matrix with σ² = threshold² · median squared distance (Kornblith's ``gram_rbf``)."""
    dot = x @ x.T
    sq = np.diag(dot)
    d2 = -2 * dot + sq[:, None] + sq[None, :]
    return np.exp(-d2 / (2 * threshold ** 2 * np.median(d2)))


def gram_cka(kx: np.ndarray, ky: np.ndarray, debiased: bool = False) -> float:
    """CKA of two Gram matrices (N × N)."""
    cx, cy = _center_gram(kx, debiased), _center_gram(ky, debiased)
    xy = float(np.sum(cx * cy))
    return xy / float(np.sqrt(np.sum(cx * cx) * np.sum(cy * cy)))


def cka(X, Y, kernel: str = "linear", debiased: bool = False, threshold: float = 1.0) -> float:
    """CKA of two representations of the same N rows (numpy or torch, any trailing shape flattened).

    ``kernel="linear"`` works in feature space (memory d_x × d_y, any N); ``"rbf"`` builds N × N Gram matrices.

    Example::

        cka(acts_layer3, acts_layer6, debiased=True)
    """
    x, y = as_float64(X), as_float64(Y)
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    if len(x) != len(y):
        raise ValueError(f"CKA compares the same rows: X has {len(x)}, Y has {len(y)}")
    if kernel == "linear":
        return cka_from_moments(pair_moments(x, y), debiased)
    if kernel == "rbf":
        return gram_cka(gram_rbf(x, threshold), gram_rbf(y, threshold), debiased)
    raise ValueError(f"unknown kernel {kernel!r}: linear or rbf")


@dataclass
class CkaOptions:
    """Options of CKA."""

    kernel: Literal["linear", "rbf"] = "linear"
    """linear (streamed in feature space) or rbf (median heuristic, in memory)."""

    debiased: bool = field(default=False, action="store_true")
    """Unbiased HSIC estimator (Song et al. 2012) instead of the biased one."""

    rbf_threshold: float = 1.0
    """RBF: σ = threshold x the median distance."""

    def check(self) -> None:
        check_choices(self)
        if self.rbf_threshold <= 0:
            raise ConfigError(f"--rbf-threshold must be positive, got {self.rbf_threshold}")


def cka_null(x: np.ndarray, y: np.ndarray, perms: np.ndarray, options: CkaOptions) -> tuple[float, np.ndarray]:
    """CKA (linear or RBF, biased or debiased) and its values with y's rows permuted: a permutation of the rows
    permutes both axes of the centred Gram matrix, so each is centred once."""
    gram = (lambda a: a @ a.T) if options.kernel == "linear" else (lambda a: gram_rbf(a, options.rbf_threshold))
    cx, cy = _center_gram(gram(x), options.debiased), _center_gram(gram(y), options.debiased)
    den = float(np.sqrt(np.sum(cx * cx) * np.sum(cy * cy)))
    score = float(np.sum(cx * cy)) / den
    null = np.array([float(np.sum(cx * cy[np.ix_(p, p)])) for p in perms]) / den
    return score, null


register_metric(AlignmentMetric(
    "cka", cka, "linear (or RBF) centered kernel alignment",
    "Kornblith et al. 2019 (google-research/centered-kernel-alignment)",
    from_moments=lambda m, o: cka_from_moments(m, o.debiased),
    prepare=lambda x, o: gram_rbf(x, o.rbf_threshold),
    compare=lambda ka, kb, o: gram_cka(ka, kb, o.debiased),
    options=CkaOptions, streams=lambda o: o.kernel == "linear", null=cka_null,
    method=lambda o: f"{o.kernel}_cka{'_debiased' if o.debiased else ''}"))

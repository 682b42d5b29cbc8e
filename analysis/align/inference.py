"""Inference for RSA scores: bootstrap over stimuli and/or subjects, permutation of stimulus labels, and paired
comparison of two models on the same resamples.

A bootstrap sample over stimuli follows rsatoolbox (``bootstrap_sample_pattern`` / ``subsample_pattern``):
stimuli drawn with replacement, every pair of drawn copies kept except copies of the same stimulus. A pair of
stimuli drawn c_i and c_j times therefore enters c_i·c_j times; for Spearman, Pearson and cosine that is computed
as a weighted score (weighted average ranks for Spearman) from one sort per RDM instead of ranking each
resampled vector again — the same number, about 10x faster (tests compare it with the explicit resampling).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import stats

from analysis.align.registry import get_comparison
from analysis.align.vectors import RdmError, n_from_length, square

BootstrapOver = Literal["both", "stimuli", "subjects"]
WEIGHTED = ("spearman", "pearson", "cosine")  #: comparisons with a weighted fast path


class _SortedVector:
    """One RDM vector's sort order and tie groups: weighted average ranks in O(M) per resample."""

    def __init__(self, v: np.ndarray) -> None:
        s, order = torch.sort(torch.from_numpy(np.ascontiguousarray(v)))
        s = s.numpy()
        self.order = order.numpy()
        new = np.empty(len(s), dtype=bool)
        new[0] = True
        np.not_equal(s[1:], s[:-1], out=new[1:])
        self.starts = np.flatnonzero(new)
        self.sizes = np.diff(np.append(self.starts, len(s)))

    def ranks(self, w: np.ndarray) -> np.ndarray:
        """Average ranks of the multiset in which entry p appears w[p] times (scipy.stats.rankdata on it)."""
        gsum = np.add.reduceat(w[self.order], self.starts)
        before = np.cumsum(gsum) - gsum
        out = np.empty(len(w))
        out[self.order] = np.repeat(before + (gsum + 1) / 2.0, self.sizes)
        return out


def _weighted_cos(a: np.ndarray, b: np.ndarray, w: np.ndarray, center: bool) -> np.ndarray:
    """Weighted correlation (``center``) or cosine of ``a`` (M,) with each row of ``b`` (s, M)."""
    tw = w.sum()
    if center:
        a = a - (w @ a) / tw
        bm = (b @ w) / tw
        num = b @ (w * a)
        bb = (b * b) @ w - tw * bm ** 2
    else:
        num = b @ (w * a)
        bb = (b * b) @ w
    aa = (w * a) @ a
    den = np.sqrt(aa * bb)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


@dataclass
class ResampleScorer:
    """Scores of one model RDM against the subjects' RDMs on resampled stimuli."""

    model: np.ndarray  #: (M,)
    subjects: np.ndarray  #: (S, M)
    method: str

    def __post_init__(self) -> None:
        self.n = n_from_length(self.model.shape[0])
        self.i, self.j = np.triu_indices(self.n, 1)
        self.fast = self.method in WEIGHTED
        if self.method == "spearman":
            self.sorted = [_SortedVector(v) for v in (self.model, *self.subjects)]

    def pair_weights(self, counts: np.ndarray) -> np.ndarray:
        return (counts[self.i] * counts[self.j]).astype(np.float64)

    def scores(self, counts: np.ndarray) -> np.ndarray:
        """Per-subject scores with stimulus ``i`` drawn ``counts[i]`` times."""
        w = self.pair_weights(counts)
        if self.method == "spearman":
            ranks = [s.ranks(w) for s in self.sorted]
            return _weighted_cos(ranks[0], np.stack(ranks[1:]), w, center=True)
        if self.fast:
            return _weighted_cos(self.model, self.subjects, w, center=self.method == "pearson")
        idx = np.repeat(np.arange(len(w)), w.astype(np.int64))
        return get_comparison(self.method).score(self.model[idx][None], self.subjects[:, idx])[0]


def bootstrap_counts(n_stim: int, n_subj: int, n: int, seed: int, over: BootstrapOver
                     ) -> Iterator[tuple[np.ndarray | None, np.ndarray | None]]:
    """``n`` resamples as (stimulus counts or None, subject counts or None); the same for a given seed, so that
    two models resampled with one seed are paired."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        stim = np.bincount(rng.integers(0, n_stim, n_stim), minlength=n_stim) if over != "subjects" else None
        subj = np.bincount(rng.integers(0, n_subj, n_subj), minlength=n_subj) if over != "stimuli" else None
        yield stim, subj


def bootstrap(model: np.ndarray, subjects: np.ndarray, method: str, n: int, seed: int = 0,
              over: BootstrapOver = "both", squared: bool = False) -> np.ndarray:
    """``n`` bootstrap values of the mean (over subjects) score of ``model`` against ``subjects`` (condensed)."""
    if over != "subjects" and not get_comparison(method).entrywise:
        raise RdmError(f"--bootstrap over stimuli is not available for {method} (its whitening depends on which "
                       "pairs are present); use --bootstrap-over subjects")
    scorer = ResampleScorer(model, subjects, method)
    base = None
    out = np.empty(n)
    for k, (stim, subj) in enumerate(bootstrap_counts(scorer.n, len(subjects), n, seed, over)):
        if stim is None:
            if base is None:
                base = get_comparison(method).score(model[None], subjects)[0]
            s = base
        else:
            s = scorer.scores(stim)
        s = s ** 2 if squared else s
        out[k] = np.average(s, weights=subj) if subj is not None else s.mean()
    return out


def permutation_null(model: np.ndarray, subjects: np.ndarray, method: str, n: int, seed: int = 0,
                     squared: bool = False) -> np.ndarray:
    """The mean score under ``n`` random relabellings of the model's stimuli."""
    cmp = get_comparison(method)
    nst = n_from_length(model.shape[0])
    i, j = np.triu_indices(nst, 1)
    rng = np.random.default_rng(seed)
    if cmp.embed is not None and cmp.entrywise:
        em = square(cmp.embed(model[None])[0])
        es = cmp.embed(subjects)
        score = lambda p: es @ em[p[i], p[j]]  # noqa: E731  embedding commutes with relabelling
    else:
        sq = square(model)
        score = lambda p: cmp.score(sq[p[i], p[j]][None], subjects)[0]  # noqa: E731
    out = np.empty(n)
    for k in range(n):
        s = score(rng.permutation(nst))
        out[k] = np.mean(s ** 2 if squared else s)
    return out


def permutation_p(observed: float, null: np.ndarray) -> float:
    """One-sided p of ``observed`` against the null: (1 + #null ≥ observed) / (1 + n)."""
    return float((1 + np.sum(null >= observed)) / (1 + len(null)))


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass
class PairedTest:
    """Model A against model B on the same subjects (and the same bootstrap resamples, where run)."""

    mean_difference: float
    t_p_value: float | None  #: paired t-test over subjects (Net2Brain's ``compare_model``)
    bootstrap_p_value: float | None  #: two-sided, from the paired bootstrap differences
    ci_low: float | None
    ci_high: float | None


def paired_test(scores_a: np.ndarray, scores_b: np.ndarray, boot_a: np.ndarray | None = None,
                boot_b: np.ndarray | None = None) -> PairedTest:
    """Compare per-subject scores of two models (and their bootstrap distributions drawn with one seed)."""
    diff = float(np.mean(scores_a) - np.mean(scores_b))
    t_p = float(stats.ttest_rel(scores_a, scores_b).pvalue) if len(scores_a) > 1 else None
    if boot_a is None or boot_b is None:
        return PairedTest(diff, t_p, None, None, None)
    d = boot_a - boot_b
    p = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
    lo, hi = percentile_ci(d)
    return PairedTest(diff, t_p, p, lo, hi)

"""A permutation null for model–model similarity: each score beside the scores of the same two views with the
rows (stimuli) of the second permuted, so that a CKA of 0.6 or a k-NN overlap of 0.2 can be read against what
unrelated rows of these widths and this many rows give (raw scores mislead across widths and sample sizes).

Each metric's own file gives its null (``AlignmentMetric.null``), permuting what it prepared once instead of
recomputing: CKA's centred Gram matrices (a permutation of the rows permutes both axes of the centred Gram; its norm
does not change), k-NN's neighbour lists (relabelled through the inverse permutation).
``tests/unit/analysis/test_align_null.py`` checks each against the metric recomputed on permuted rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.align.registry import AlignmentMetric, get_metric

MAX_ROWS = 10_000  #: N × N Gram matrices beyond this do not fit a worker's memory comfortably


@dataclass
class NullResult:
    score: float
    null_mean: float
    null_sd: float
    p_value: float  #: (1 + #null >= score) / (1 + permutations): one-sided, never 0
    permutations: int

    def to_row(self) -> dict:
        return {"null_mean": self.null_mean, "null_sd": self.null_sd, "p_value": self.p_value,
                "permutations": self.permutations}


def permutations(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` permutations of ``n`` rows, the same for every pair of a run (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)]) if count else np.zeros((0, n), dtype=np.int64)


def permutation_null(metric: str | AlignmentMetric, x: np.ndarray, y: np.ndarray, perms: np.ndarray,
                     options) -> NullResult:
    """``metric``'s score of (x, y) against its values over ``perms`` of y's rows."""
    m = get_metric(metric) if isinstance(metric, str) else metric
    if m.null is None:
        raise ValueError(f"alignment metric {m.name!r} has no permutation null")
    score, null = m.null(x, y, perms, options)
    return NullResult(score=score, null_mean=float(null.mean()), null_sd=float(null.std(ddof=1)),
                      p_value=float((1 + np.sum(null >= score - 1e-12)) / (1 + len(null))), permutations=len(null))

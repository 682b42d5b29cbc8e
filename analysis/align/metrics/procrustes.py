"""Shape distances (Williams et al. 2021, netrep ``LinearMetric(alpha=1)``): after centring, the orthogonal
Procrustes distance min_Q ‖X̃ − ỸQ‖_F = √(‖X̃‖² + ‖Ỹ‖² − 2‖X̃ᵀỸ‖_*) and the angular distance
arccos(‖X̃ᵀỸ‖_* / (‖X̃‖‖Ỹ‖)) (‖·‖_*: the nuclear norm; widths may differ, as with netrep's zero padding).
Both follow from X̃ᵀỸ, so they stream like linear CKA."""

from __future__ import annotations

import numpy as np

from analysis.align.moments import PairMoments, pair_moments
from analysis.align.registry import AlignmentMetric, register_metric
from analysis.align.rsa import as_float64


def _nuclear(m: np.ndarray) -> float:
    return float(np.linalg.svd(m, compute_uv=False).sum())


def angular_from_moments(m: PairMoments) -> float:
    cos = _nuclear(m.xty) / np.sqrt(np.trace(m.xtx) * np.trace(m.yty))
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def procrustes_from_moments(m: PairMoments) -> float:
    return float(np.sqrt(max(0.0, np.trace(m.xtx) + np.trace(m.yty) - 2 * _nuclear(m.xty))))


def _views(X, Y) -> PairMoments:
    x, y = as_float64(X), as_float64(Y)
    return pair_moments(x.reshape(len(x), -1), y.reshape(len(y), -1))


def angular_distance(X, Y) -> float:
    """Angular shape distance (radians, 0 = identical up to rotation and scale)."""
    return angular_from_moments(_views(X, Y))


def procrustes_distance(X, Y) -> float:
    """Orthogonal Procrustes distance of the centred representations (not rescaled)."""
    return procrustes_from_moments(_views(X, Y))


register_metric(AlignmentMetric("angular", lambda X, Y, **_: angular_distance(X, Y),
                                "angular shape distance arccos(||X'Y||_* / (||X|| ||Y||))",
                                "Williams et al. 2021 (netrep LinearMetric alpha=1, score_method='angular')",
                                from_moments=lambda m, o: angular_from_moments(m)))
register_metric(AlignmentMetric("procrustes", lambda X, Y, **_: procrustes_distance(X, Y),
                                "orthogonal Procrustes distance sqrt(||X||^2 + ||Y||^2 - 2 ||X'Y||_*)",
                                "Williams et al. 2021 (netrep LinearMetric alpha=1, score_method='euclidean')",
                                from_moments=lambda m, o: procrustes_from_moments(m)))

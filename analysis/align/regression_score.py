"""Brain-Score's neural predictivity, as brain-score/vision defines it (``metrics/regression_correlation`` and
``metrics/internal_consistency``, read at 2026-12; re-implemented here on numpy and scikit-learn, no xarray):

- **score**: ``splits`` random splits of the stimuli (scikit-learn ``ShuffleSplit``, ``train_size`` 0.9,
  ``random_state`` 1); on each, a regression from the layer's features to the responses (PLS with 25 components,
  unscaled, or ridge with alpha 1) is fit on the training stimuli, and each neuroid's held-out Pearson r is taken;
  a split's value is the median over neuroids; the score is the mean over splits, its error the standard error
  over splits (population standard deviation / sqrt(splits), as xarray computes it).
- **ceiling** (internal consistency): ``splits`` random halvings of the repetitions (``ShuffleSplit`` over the
  unique repetition values, ``train_size`` 0.5, ``random_state`` 1); each half averaged over its repetitions per
  stimulus; each neuroid's Pearson r between the halves, Spearman–Brown corrected for the halving (2r / (1 + r));
  median over neuroids; mean over splits.
- **ceiled score** = score / ceiling.

Pure functions on arrays; the command (``score_run.py``) reads the data. The test re-implements both from the
Brain-Score source and checks equality to 1e-9."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import ShuffleSplit

SEED = 1  #: Brain-Score's random_state for every split


@dataclass
class Scored:
    center: float
    error: float
    per_split: np.ndarray  #: median over neuroids, per split


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``a`` with the same column of ``b`` (NaN where one is constant)."""
    am, bm = a - a.mean(0), b - b.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (am * bm).sum(0) / np.sqrt((am * am).sum(0) * (bm * bm).sum(0))


def make_regression(kind: str, pls_components: int = 25, ridge_alpha: float = 1.0):
    """The estimator Brain-Score's ``pls_regression()`` / ``ridge_regression()`` build (scikit-learn defaults
    otherwise)."""
    if kind == "pls":
        from sklearn.cross_decomposition import PLSRegression

        return PLSRegression(n_components=pls_components, scale=False)
    from sklearn.linear_model import Ridge

    return Ridge(alpha=ridge_alpha)


def regression_score(x: np.ndarray, y: np.ndarray, kind: str = "pls", splits: int = 10, train_size: float = 0.9,
                     pls_components: int = 25, ridge_alpha: float = 1.0, seed: int = SEED) -> Scored:
    """Cross-validated predictivity of ``y`` (stimuli × neuroids, averaged over repetitions) from ``x``."""
    values = []
    for train, test in ShuffleSplit(n_splits=splits, train_size=train_size, random_state=seed).split(x):
        reg = make_regression(kind, min(pls_components, len(train) - 1, x.shape[1]), ridge_alpha)
        reg.fit(x[train], y[train])
        r = pearson_columns(np.asarray(reg.predict(x[test])).reshape(len(test), -1), y[test])
        values.append(float(np.nanmedian(r)))
    v = np.asarray(values)
    return Scored(float(v.mean()), float(v.std() / np.sqrt(len(v))), v)


def spearman_brown(r, n: float = 2.0):
    return n * r / (1 + (n - 1) * r)


def internal_consistency(reps: np.ndarray, splits: int = 10, seed: int = SEED) -> Scored:
    """Split-half consistency of ``reps`` (repetitions × stimuli × neuroids; NaN: a missing repetition)."""
    if len(reps) < 2:
        raise ValueError("a split-half ceiling needs at least two repetitions per stimulus")
    values = []
    for a, b in ShuffleSplit(n_splits=splits, train_size=0.5, random_state=seed).split(np.zeros(len(reps))):
        with np.errstate(invalid="ignore"):
            half1, half2 = np.nanmean(reps[a], axis=0), np.nanmean(reps[b], axis=0)
        ok = np.isfinite(half1).all(1) & np.isfinite(half2).all(1)  # a stimulus missing in a half: left out
        r = spearman_brown(pearson_columns(half1[ok], half2[ok]))
        values.append(float(np.nanmedian(r)))
    v = np.asarray(values)
    return Scored(float(v.mean()), float(v.std() / np.sqrt(len(v))), v)


def commit_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of ``n`` stimuli: the layer is chosen on the first and scored on the second."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])

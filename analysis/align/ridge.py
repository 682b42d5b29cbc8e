"""Voxelwise (targetwise) ridge encoding models: an alpha per target chosen by inner cross-validation, refit on
the outer training stimuli, scored on held-out stimuli. No I/O: arrays in, arrays out.

Each inner fold costs one decomposition of its training features, shared by every alpha and every target: a thin
SVD X = U S Vᵀ when stimuli ≥ features, else the eigendecomposition of the kernel X Xᵀ (the dual form: n × n
instead of n × p). Predictions for alpha α are P · diag(f_α) · B with P = X_test V (or K_test,train Q),
B = Uᵀ Y (or Qᵀ Y) and f_α = s / (s² + α) (or 1 / (λ + α)). himalaya does the same per fold but leaves the dual
form to the user (its primal form was 9x slower with more features than stimuli); scikit-learn's RidgeCV with
a ``cv`` refits every alpha and target.

With ``fit_intercept`` features and targets are centred on each training set, as scikit-learn and himalaya do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

AlphaScore = Literal["r2", "neg_mse"]


@dataclass
class Decomposition:
    """One training set's factors: predictions for alpha α are ``p @ (f(α)[:, None] * b)``."""

    p: np.ndarray  #: (n_test, r)
    spectrum: np.ndarray  #: s (primal) or λ (dual), (r,)
    dual: bool
    u_or_q: np.ndarray  #: U (n_train, r) or Q (n_train, n_train)

    def factor(self, alpha: float) -> np.ndarray:
        if self.dual:
            return 1.0 / (np.clip(self.spectrum, 0.0, None) + alpha)
        s = self.spectrum
        return s / (s * s + alpha)


def decompose(x_train: np.ndarray, x_test: np.ndarray) -> Decomposition:
    """Factor centred training features once for every alpha; ``x_test`` centred with the training mean."""
    n, p = x_train.shape
    if p > n:  # dual (kernel) form
        lam, q = np.linalg.eigh(x_train @ x_train.T)
        return Decomposition((x_test @ x_train.T) @ q, lam, True, q)
    u, s, vt = np.linalg.svd(x_train, full_matrices=False)
    return Decomposition(x_test @ vt.T, s, False, u)


def _r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """scikit-learn's r2_score per target (1 − SS_res / SS_tot about the test mean)."""
    ss_res = ((y - pred) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.where(ss_res > 0, 0.0, 1.0))


def pearson_columns(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson r per column (0 where either column is constant)."""
    yc, pc = y - y.mean(axis=0), pred - pred.mean(axis=0)
    den = np.sqrt((yc * yc).sum(axis=0) * (pc * pc).sum(axis=0))
    return np.where(den > 0, (yc * pc).sum(axis=0) / np.where(den > 0, den, 1.0), 0.0)


SCORES = {"r2": _r2, "neg_mse": lambda y, pred: -((y - pred) ** 2).mean(axis=0)}


def _center(x_tr, x_te, y_tr, fit_intercept):
    if not fit_intercept:
        return x_tr, x_te, y_tr, 0.0
    mx, my = x_tr.mean(axis=0), y_tr.mean(axis=0)
    return x_tr - mx, x_te - mx, y_tr - my, my


def target_batches(n_targets: int, batch: int) -> Iterator[slice]:
    for start in range(0, n_targets, batch):
        yield slice(start, min(start + batch, n_targets))


def inner_cv_scores(x: np.ndarray, y: np.ndarray, alphas: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                    fit_intercept: bool = True, score: AlphaScore = "r2", batch: int = 4096) -> np.ndarray:
    """Mean over ``splits`` of the validation score of every alpha for every target: (n_alphas, n_targets)."""
    out = np.zeros((len(alphas), y.shape[1]))
    for train, val in splits:
        x_tr, x_va, _, _ = _center(x[train], x[val], y[train][:, :0], fit_intercept)
        dec = decompose(x_tr, x_va)
        for sl in target_batches(y.shape[1], batch):
            y_tr, y_va = y[train, sl].astype(np.float64), y[val, sl].astype(np.float64)
            my = y_tr.mean(axis=0) if fit_intercept else 0.0
            b = dec.u_or_q.T @ (y_tr - my)
            for a, alpha in enumerate(alphas):
                pred = dec.p @ (dec.factor(alpha)[:, None] * b) + my
                out[a, sl] += SCORES[score](y_va, pred)
    return out / len(splits)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, target_alphas: np.ndarray,
                fit_intercept: bool = True, batch: int = 4096) -> np.ndarray:
    """Predictions on ``x_test`` of ridge fits on the training set, target t with ``target_alphas[t]``."""
    x_tr, x_te, _, _ = _center(x_train, x_test, y_train[:, :0], fit_intercept)
    dec = decompose(x_tr, x_te)
    pred = np.empty((len(x_test), y_train.shape[1]))
    for sl in target_batches(y_train.shape[1], batch):
        y_tr = y_train[:, sl].astype(np.float64)
        my = y_tr.mean(axis=0) if fit_intercept else np.zeros(y_tr.shape[1])
        b = dec.u_or_q.T @ (y_tr - my)
        ta = target_alphas[sl]
        for alpha in np.unique(ta):
            cols = np.flatnonzero(ta == alpha)
            pred[:, sl.start + cols] = dec.p @ (dec.factor(alpha)[:, None] * b[:, cols]) + my[cols]
    return pred


def kfold(n: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's ``KFold(k)`` (no shuffle): contiguous folds, the first n % k one item larger."""
    from sklearn.model_selection import KFold

    return [(tr, te) for tr, te in KFold(k).split(np.zeros((n, 1)))]


@dataclass
class EncodingResult:
    """Out-of-fold predictions' scores per target, and the alphas chosen in each outer fold."""

    r: np.ndarray  #: (n_targets,) Pearson r of the held-out predictions
    r2: np.ndarray  #: (n_targets,) R² of the held-out predictions
    alphas: np.ndarray  #: (n_folds, n_targets)
    predictions: np.ndarray  #: (n_stimuli, n_targets)


def ridge_cv(x, y, alphas, folds: int = 5, inner_folds: int = 5, fit_intercept: bool = True,
             score: AlphaScore = "r2", batch: int = 4096, progress=None) -> EncodingResult:
    """Nested cross-validated ridge from features ``x`` (stimuli × features) to every column of ``y``
    (stimuli × targets): outer ``folds`` by stimulus, an alpha per target chosen by ``inner_folds`` within
    each outer training set (mean inner score, ``r2`` as scikit-learn's RidgeCV or ``neg_mse`` as himalaya's),
    then refit and predicted on the held-out stimuli.

    Example::

        res = ridge_cv(feats, voxels, alphas=np.logspace(-2, 5, 15))
        res.r  # held-out Pearson r per voxel
    """
    from analysis.align.rsa import as_float64

    x = as_float64(x)
    x = x.reshape(len(x), -1)
    y = np.asarray(y)
    y = y[:, None] if y.ndim == 1 else y
    alphas = np.asarray(alphas, dtype=np.float64)
    pred = np.empty(y.shape, dtype=np.float64)
    chosen = np.empty((folds, y.shape[1]))
    for f, (train, test) in enumerate(kfold(len(x), folds)):
        inner = kfold(len(train), inner_folds)
        scores = inner_cv_scores(x[train], y[train], alphas, inner, fit_intercept, score, batch)
        chosen[f] = alphas[np.argmax(scores, axis=0)]
        pred[test] = fit_predict(x[train], y[train], x[test], chosen[f], fit_intercept, batch)
        if progress:
            progress(f + 1, folds)
    yt = y.astype(np.float64)
    return EncodingResult(pearson_columns(yt, pred), _r2(yt, pred), chosen, pred)

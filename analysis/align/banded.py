"""Banded ridge regression and variance partitioning: several feature spaces (bands: hooks, or models) predict
the responses together, each with its own regularisation, and the explained variance is split between them.

``banded_ridge`` is himalaya's ``BandedRidgeCV`` with the ``random_search`` solver (Dupré la Tour et al. 2022)
over an explicit list of band weights γ on the simplex and ridge penalties α: each band's features are scaled by
√γ_b, a ridge with α is cross-validated (KFold, negative mean squared error), the best (γ, α) is kept per target
(a later γ only when better by more than float64's epsilon; equal scores favour the larger α by a 1e-10·log α
slope), and the weights are refit on all rows and scaled back to the unscaled features. Written on numpy here
(float64; the SVD solution himalaya uses), checked against himalaya to 1e-9 in
``tests/unit/analysis/test_banded.py``. ``r2_split`` is himalaya's ``r2_score_split`` (product measure: the
bands' R² add up to the joint R²); ``partition`` the classic set-theoretic variance partitioning of two or three
spaces from the R² of every subset's joint model."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold


@dataclass
class BandedFit:
    gammas: np.ndarray  #: (bands, targets) the chosen band weights
    alphas: np.ndarray  #: (targets,) the chosen penalties
    coef: np.ndarray  #: (features, targets) on the unscaled, concatenated features
    intercept: np.ndarray  #: (targets,)
    cv_scores: np.ndarray  #: (candidates, targets) best-α CV score of each γ
    slices: list[slice]

    def predict_split(self, xs: list[np.ndarray]) -> np.ndarray:
        """(bands, rows, targets): each band's share of the prediction (without the intercept)."""
        return np.stack([x @ self.coef[s] for x, s in zip(xs, self.slices, strict=True)])

    def predict(self, xs: list[np.ndarray]) -> np.ndarray:
        return self.predict_split(xs).sum(0) + self.intercept


def simplex_grid(bands: int, steps: int = 10) -> np.ndarray:
    """Band weights inside the simplex in steps of 1/steps (none zero: a band's log-weight must be finite), the
    equal weighting first (as himalaya starts its random search)."""
    pts = [np.array(c) / steps for c in itertools.product(range(1, steps), repeat=bands) if sum(c) == steps]
    grid = np.array([np.full(bands, 1 / bands), *[p for p in pts if not np.allclose(p, 1 / bands)]])
    return grid


def _ridge_maps(z: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """(alphas, features, rows): V diag(s / (α + s²)) Uᵀ for each α (the SVD solution)."""
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    w = s / (alphas[:, None] + s ** 2)
    return np.matmul(vt.T, w[:, :, None] * u.T)


def banded_ridge(xs: list[np.ndarray], y: np.ndarray, gammas: np.ndarray, alphas, cv: int = 5,
                 fit_intercept: bool = False) -> BandedFit:
    """Fit a banded ridge from the bands ``xs`` (rows × features each) to ``y`` (rows × targets)."""
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    sizes = np.cumsum([0, *(x.shape[1] for x in xs)])
    slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(sizes)]
    x = np.concatenate(xs, 1).astype(np.float64)
    y = np.asarray(y, dtype=np.float64)
    x_off, y_off = (x.mean(0), y.mean(0)) if fit_intercept else (np.zeros(x.shape[1]), np.zeros(y.shape[1]))
    x, y = x - x_off, y - y_off
    n_targets = y.shape[1]
    best_g = np.full((len(xs), n_targets), 1 / len(xs))
    best_a, best_s = np.ones(n_targets), np.full(n_targets, -np.inf)
    coef, cv_scores = np.zeros((x.shape[1], n_targets)), np.zeros((len(gammas), n_targets))
    folds = list(KFold(n_splits=cv).split(x))
    for i, gamma in enumerate(np.asarray(gammas, dtype=np.float64)):
        scale = np.concatenate([np.full(s.stop - s.start, np.sqrt(g)) for s, g in zip(slices, gamma, strict=True)])
        z = x * scale
        scores = np.zeros((len(folds), len(alphas), n_targets))
        for j, (tr, te) in enumerate(folds):
            ztr, zte, ytr, yte = z[tr], z[te], y[tr], y[te]
            if fit_intercept:
                zm, ym = ztr.mean(0), ytr.mean(0)
                ztr, zte, ytr, yte = ztr - zm, zte - zm, ytr - ym, yte - ym
            pred = np.matmul(zte @ _ridge_maps(ztr, alphas), ytr)  # (alphas, test, targets)
            scores[j] = -((yte - pred) ** 2).sum(1) / len(te)
        mean = scores.mean(0) + (np.log(alphas) * 1e-10)[:, None]
        pick = mean.argmax(0)
        cv_scores[i] = mean[pick, np.arange(n_targets)]
        better = cv_scores[i] > best_s + np.finfo(np.float64).eps
        if better.any():
            best_s[better], best_g[:, better], best_a[better] = cv_scores[i][better], gamma[:, None], alphas[
                pick[better]]
            maps = _ridge_maps(z, np.unique(best_a[better]))
            for t in np.flatnonzero(better):
                k = int(np.searchsorted(np.unique(best_a[better]), best_a[t]))
                coef[:, t] = (maps[k] @ y[:, t]) * scale
    return BandedFit(best_g, best_a, coef, y_off - x_off @ coef, cv_scores, slices)


def r2_split(y: np.ndarray, split: np.ndarray) -> np.ndarray:
    """(bands, targets): each band's R² by the product measure, ``y`` zero-mean over rows: Σ (2·y·ŷ_b − ŷ_b·ŷ) /
    Σ y² (they add up to the joint R²)."""
    total = split.sum(0)
    return ((2 * y[None] * split - split * total[None]).sum(1)) / (y ** 2).sum(0)


def partition(r2: dict[frozenset[str], np.ndarray]) -> dict[str, np.ndarray]:
    """Unique and shared variance of two or three spaces from the R² of every subset's joint model (the keys:
    every non-empty subset of the band names). Two spaces A, B: unique A = R²(AB) − R²(B), shared = R²(A) +
    R²(B) − R²(AB). Three spaces: the seven regions of the Venn diagram by inclusion–exclusion."""
    names = sorted(set().union(*r2))
    full = frozenset(names)
    if len(names) == 2:
        a, b = names
        return {f"unique {a}": r2[full] - r2[frozenset({b})], f"unique {b}": r2[full] - r2[frozenset({a})],
                f"shared {a}&{b}": r2[frozenset({a})] + r2[frozenset({b})] - r2[full]}
    if len(names) != 3:
        raise ValueError("variance partitioning covers two or three spaces")
    a, b, c = names
    f = lambda *s: r2[frozenset(s)]  # noqa: E731
    return {
        f"unique {a}": f(a, b, c) - f(b, c), f"unique {b}": f(a, b, c) - f(a, c), f"unique {c}": f(a, b, c) - f(a, b),
        f"shared {a}&{b}": f(a, c) + f(b, c) - f(c) - f(a, b, c),
        f"shared {a}&{c}": f(a, b) + f(b, c) - f(b) - f(a, b, c),
        f"shared {b}&{c}": f(a, b) + f(a, c) - f(a) - f(a, b, c),
        f"shared {a}&{b}&{c}": f(a) + f(b) + f(c) - f(a, b) - f(a, c) - f(b, c) + f(a, b, c),
    }

"""Ridge regression in closed form, scikit-learn's ``Ridge(alpha, fit_intercept=True)``: ``reg`` = alpha.

Exact at any size: one pass accumulates each fold's sufficient statistics (n, Σx, Σxxᵀ, Σxy, Σy, Σy², float64,
standardised features), so every fit is a d x d solve on sums of folds and every test R² comes from the test
fold's sums, without a second pass. Penalties sharing a training set share one eigendecomposition.
"""

from __future__ import annotations

import numpy as np
import torch

from analysis.probe.problems import Features, Fit, FitResult, ProbeData
from analysis.probe.registry import ProbeKind, SolverOptions, register


class _FoldSums:
    """Per fold and target: n, Σx, Σxxᵀ, Σx·y, Σy, Σy² of the standardised items (targets centred by ``shift``)."""

    def __init__(self, feats: Features, data: ProbeData) -> None:
        folds = int(data.fold.max()) + 1
        T, d = data.targets.shape[1], feats.d
        self.shift = torch.from_numpy(np.asarray(data.targets, np.float64).mean(0))
        self.n = torch.zeros(folds, dtype=torch.float64)
        self.sx = torch.zeros((folds, d), dtype=torch.float64)
        self.sxx = torch.zeros((folds, d, d), dtype=torch.float64)
        self.sxy = torch.zeros((folds, d, T), dtype=torch.float64)
        self.sy = torch.zeros((folds, T), dtype=torch.float64)
        self.syy = torch.zeros((folds, T), dtype=torch.float64)
        fold = torch.from_numpy(np.asarray(data.fold, np.int64))
        targets = torch.from_numpy(np.asarray(data.targets, np.float64)) - self.shift
        for items, x in feats.chunks():
            xs, f, y = feats.standardized(x), fold[items], targets[items]
            for g in range(folds):
                sel = f == g
                if not bool(sel.any()):
                    continue
                xg, yg = xs[sel], y[sel]
                self.n[g] += len(xg)
                self.sx[g] += xg.sum(0)
                self.sxx[g] += xg.t() @ xg
                self.sxy[g] += xg.t() @ yg
                self.sy[g] += yg.sum(0)
                self.syy[g] += (yg * yg).sum(0)

    def total(self, folds: tuple[int, ...], t: int):
        idx = list(folds)
        return (self.n[idx].sum(), self.sx[idx].sum(0), self.sxx[idx].sum(0), self.sxy[idx, :, t].sum(0),
                self.sy[idx, t].sum(), self.syy[idx, t].sum())


def _r2(sums, w: torch.Tensor, b: float) -> float:
    """scikit-learn's ``r2_score`` on the items whose sums are ``sums``, for predictions x·w + b."""
    n, sx, sxx, sxy, sy, syy = sums
    if n < 2:
        return float("nan")
    sse = syy - 2 * w @ sxy - 2 * b * sy + w @ sxx @ w + 2 * b * (w @ sx) + n * b * b
    sst = syy - sy * sy / n
    return float(1 - sse / sst) if sst > 0 else float("nan")


def fit_ridge(feats: Features, data: ProbeData, fits: list[Fit], opts: SolverOptions) -> FitResult:
    """Every fit of ``fits`` exactly, from one pass over ``feats``."""
    sums = _FoldSums(feats, data)
    weights, biases, scores = [None] * len(fits), [None] * len(fits), np.full(len(fits), np.nan)
    by_train: dict[tuple, list[int]] = {}
    for i, f in enumerate(fits):
        by_train.setdefault((f.train_folds, f.target), []).append(i)
    for (train, t), members in by_train.items():
        n, sx, sxx, sxy, sy, _ = sums.total(train, t)
        mx, my = sx / n, sy / n
        cov = sxx - n * torch.outer(mx, mx)
        cxy = sxy - n * mx * my
        evals, evecs = torch.linalg.eigh(cov)
        proj = evecs.t() @ cxy
        for i in members:
            f = fits[i]
            w = evecs @ (proj / (evals + f.solve_reg))
            b = float(my - w @ mx)
            if f.test_folds:
                scores[i] = _r2(sums.total(f.test_folds, t), w, b)
            We = w * feats.inv_std
            be = b - float((feats.mean * feats.inv_std) @ w) + float(sums.shift[t])
            weights[i], biases[i] = We.float()[None], torch.tensor([be], dtype=torch.float32)
    return FitResult(weights, biases, scores, 1, {"solver": "closed-form"})


RIDGE = register(ProbeKind("ridge", ("regress",), "r2", "alpha", tuple(10.0 ** np.arange(-6, 3)), fit_ridge,
                           exact_search=True))

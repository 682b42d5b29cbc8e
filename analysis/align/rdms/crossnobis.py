"""Crossnobis: the cross-validated (squared) Mahalanobis distance over independent measurements (runs) of each
stimulus, unbiased by the measurement noise (Walther et al. 2016; rsatoolbox ``calc_rdm_crossnobis``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.align.registry import RdmMethod, register_rdm
from analysis.align.vectors import RdmError
from shards.errors import ConfigError


@dataclass
class CrossnobisOptions:
    """Options of the crossnobis RDM."""

    runs: str | None = None
    """Crossnobis: the metadata column naming each row's run (independent measurement)."""

    def check(self) -> None:
        if not self.runs:
            raise ConfigError("--rdm crossnobis needs repeated measurements: --runs COLUMN names each row's run")


def _means(x: np.ndarray, cond_idx: np.ndarray, n_cond: int, rows: np.ndarray) -> np.ndarray:
    sums = np.zeros((n_cond, x.shape[1]))
    np.add.at(sums, cond_idx[rows], x[rows])
    counts = np.bincount(cond_idx[rows], minlength=n_cond)
    return sums / counts[:, None]


def crossnobis_rdm(x: np.ndarray, convention: str = "rsatoolbox", conditions=None, runs=None,
                   noise: np.ndarray | None = None, **_) -> np.ndarray:
    """rsatoolbox's leave-one-run-out crossnobis: for each run, the distance between the mean patterns of the
    other runs and of that run, ``(d_train)ᵀ Λ (d_test) / n_features``, averaged over runs. Rows of the result
    follow the sorted unique ``conditions``; ``noise`` is a precision matrix Λ (default: identity)."""
    if conditions is None or runs is None:
        raise RdmError("crossnobis needs repeated measurements: give each row's condition (stimulus) and run; "
                       "with a dataset, --runs COLUMN names the run of each row")
    conds, cond_idx = np.unique(np.asarray(conditions), return_inverse=True)
    folds, fold_idx = np.unique(np.asarray(runs), return_inverse=True)
    if len(folds) < 2:
        raise RdmError(f"crossnobis needs at least 2 runs (independent measurements) per stimulus; found "
                       f"{len(folds)} run value(s). Use --rdm euclidean for single measurements.")
    for f in range(len(folds)):
        missing = np.setdiff1d(np.arange(len(conds)), cond_idx[fold_idx == f])
        if len(missing):
            raise RdmError(f"crossnobis: run {folds[f]!r} has no measurement of stimuli "
                           f"{[conds[i] for i in missing[:10]]} (every run must measure every stimulus)")
    prec = np.eye(x.shape[1]) if noise is None else np.asarray(noise, dtype=np.float64)
    out = np.zeros((len(conds), len(conds)))
    for f in range(len(folds)):
        test = _means(x, cond_idx, len(conds), np.flatnonzero(fold_idx == f))
        train = _means(x, cond_idx, len(conds), np.flatnonzero(fold_idx != f))
        k = train @ prec @ test.T
        dk = np.diag(k)
        out += dk[None, :] + dk[:, None] - k - k.T
    out /= len(folds) * x.shape[1]
    np.fill_diagonal(out, 0.0)
    return out


register_rdm(RdmMethod("crossnobis", crossnobis_rdm, {
    "rsatoolbox": "leave-one-run-out crossnobis / number of channels (calc_rdm_crossnobis, identity noise "
                  "unless a precision is given)",
    "net2brain": "as rsatoolbox (Net2Brain has no crossnobis)"}, needs_runs=True, options=CrossnobisOptions))

"""The fits one probe job makes on one hook, as one batched problem.

Every fit is an L2-penalised linear probe on the same items (rows or pooled examples), differing only in which
folds it trains and tests on, which target it predicts (the label or a control task) and its penalty. A probe
kind solves all of them in one pass over the features per iteration (one wide matrix product instead of one
narrow product per fit), which is where most of its speed over a loop of scikit-learn fits comes from.
``Features`` (the items a fit reads) lives here beside ``ProbeData`` rather than in ``features.py`` (which loads
them from a dataset): the registry names it in its fit signature, and ``features.py`` needs the probe plan,
whose config needs the registry, so a type imported from there would close a circle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

Role = Literal["search", "fold", "control", "final"]
CHUNK_ROWS = 16384  #: rows per matrix product: ~25 MB of float32 at d = 384: large enough for fast products,
#: small next to the items themselves


@dataclass(frozen=True, kw_only=True)
class Fit:
    """One fit: train on ``train_folds``, score on ``test_folds`` (empty: not scored)."""

    role: Role
    fold: int  #: the outer fold it belongs to (-1 for the final fit on all items)
    train_folds: tuple[int, ...]
    test_folds: tuple[int, ...]
    target: int  #: column of the targets matrix: 0 the label, 1 the control task
    reg: float  #: penalty in the probe's scikit-learn units: 1/C for logistic, alpha for ridge
    search_only: bool = False  #: train and test only on the regularisation-search subsample
    reg_scale: float = 1.0  #: applied while solving: a subsample's share of its full training folds, so that
    #: a penalty picked on the subsample means the same per training item on the full folds

    @property
    def solve_reg(self) -> float:
        return self.reg * self.reg_scale


@dataclass
class Features:
    """Items ``(n, d)``: ``x`` in memory (stored dtype), or ``stream`` re-reading them from the dataset."""

    n: int
    d: int
    mean: torch.Tensor  #: (d,) float64, the dataset's per-dimension mean
    inv_std: torch.Tensor  #: (d,) float64, 1 / the dataset's per-dimension std (1 where the std is 0)
    x: torch.Tensor | None = None
    stream: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]] | None = None

    @property
    def in_memory(self) -> bool:
        return self.x is not None

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[torch.Tensor | slice, torch.Tensor]]:
        """``(items, x)`` pieces covering every item once: ``x`` raw float32 (a copy the caller may modify),
        ``items`` their indices."""
        if self.x is not None:
            for start in range(0, self.n, rows):
                chunk = self.x[start:start + rows]
                yield slice(start, min(start + rows, self.n)), chunk.clone() if chunk.dtype == torch.float32 \
                    else chunk.float()
        else:
            yield from self.stream()

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() - self.mean) * self.inv_std


@dataclass
class ProbeData:
    """What a probe kind fits on: per item its fold, targets and whether it is in the search subsample."""

    fold: np.ndarray  #: (n,) int8/int64 outer fold of each item
    targets: np.ndarray  #: (n, T) int64 class ids (classify) or float64 values (regress)
    n_classes: int  #: 0 for regression
    search: np.ndarray | None = None  #: (n,) bool: items of the regularisation search (None: all)

    def masks(self, fits: list[Fit], which: Literal["train", "test"], rows: slice | np.ndarray = slice(None)
              ) -> torch.Tensor:
        """(m, P) bool: which of the items ``rows`` each fit trains (or tests) on."""
        fold = torch.from_numpy(np.asarray(self.fold[rows], dtype=np.int64))
        search = None if self.search is None else torch.from_numpy(self.search[rows])
        cols = []
        for f in fits:
            folds = f.train_folds if which == "train" else f.test_folds
            m = torch.isin(fold, torch.tensor(folds, dtype=torch.long)) if folds else torch.zeros(len(fold), dtype=bool)
            if f.search_only and search is not None:
                m &= search
            cols.append(m)
        return torch.stack(cols, 1) if cols else torch.zeros((len(fold), 0), dtype=bool)


@dataclass
class FitResult:
    """Per fit: raw-space weights ``(K, d)`` and bias ``(K,)`` (logits = x @ W.T + b on the hook's stored values),
    and the test score (accuracy or R²; NaN where the fit has no test items)."""

    weights: list[torch.Tensor]
    bias: list[torch.Tensor]
    scores: np.ndarray
    iterations: int = 0
    notes: dict = field(default_factory=dict)


def outer_fits(folds: int, regs: list[float], control: bool, final_reg: float | None) -> list[Fit]:
    """Each outer fold's fit with its chosen penalty (and its control fit), plus the final fit on every fold."""
    every = tuple(range(folds))
    fits = [Fit(role="fold", fold=f, train_folds=tuple(g for g in every if g != f), test_folds=(f,), target=0,
                reg=regs[f]) for f in range(folds)]
    if control:
        fits += [Fit(role="control", fold=f, train_folds=tuple(g for g in every if g != f), test_folds=(f,), target=1,
                     reg=regs[f]) for f in range(folds)]
    if final_reg is not None:
        fits.append(Fit(role="final", fold=-1, train_folds=every, test_folds=(), target=0, reg=final_reg))
    return fits


def search_fits(data: ProbeData, grid: list[float], folds: int) -> list[Fit]:
    """Inner cross-validation on the training folds only: for outer fold f the other folds, dealt into at most
    three inner folds, each validated once per candidate penalty (on the search subsample if there is one)."""
    full = np.bincount(data.fold[data.fold >= 0], minlength=folds).astype(np.float64)
    sub = full if data.search is None else np.bincount(data.fold[data.search & (data.fold >= 0)],
                                                       minlength=folds).astype(np.float64)
    fits = []
    for f in range(folds):
        others = [g for g in range(folds) if g != f]
        k = min(3, len(others))
        inner = [tuple(g for i, g in enumerate(others) if i % k == j) for j in range(k)]
        for val in inner:
            train = tuple(g for g in others if g not in val)
            # the penalty per training item of the full outer training folds, on this smaller training set
            scale = sub[list(train)].sum() / max(full[others].sum(), 1.0)
            fits += [Fit(role="search", fold=f, train_folds=train, test_folds=val, target=0, reg=reg,
                         search_only=data.search is not None, reg_scale=scale) for reg in grid]
    return fits


def pick_regs(fits: list[Fit], scores: np.ndarray, folds: int) -> list[float]:
    """Per outer fold, the penalty with the best mean inner score (ties: the stronger penalty)."""
    out = []
    for f in range(folds):
        by_reg: dict[float, list[float]] = {}
        for fit, s in zip(fits, scores, strict=True):
            if fit.role == "search" and fit.fold == f:
                by_reg.setdefault(fit.reg, []).append(float(s))
        means = {r: np.nanmean(v) for r, v in by_reg.items()}
        best = max(means.values())
        out.append(max(r for r, m in means.items() if m >= best - 1e-12))
    return out

"""One hook's fits, as the hook's task runs them and as the cost estimate times them on a sample: the penalty
search on each outer fold's training folds, then every outer fold (and its control, with the fold's penalty) and
the final fit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.probe.config import ProbeConfig
from analysis.probe.problems import Features, Fit, FitResult, ProbeData, outer_fits, pick_regs, search_fits
from analysis.probe.registry import ProbeKind, SolverOptions
from analysis.probe.targets import ProbePlan


@dataclass
class ProbeRun:
    """The plan of a probe run: items, folds and targets, and the probe kind that fits them."""

    targets: ProbePlan
    kind: str

    @property
    def notes(self) -> list[str]:
        return self.targets.notes


@dataclass
class HookFits:
    """A hook's outer fits and their result, the penalty of each fold and of the final fit."""

    regs: list[float]
    final_reg: float
    fits: list[Fit]
    result: FitResult
    search: dict = field(default_factory=dict)  #: the penalty search's solver notes (empty: none ran)


def solver_options(cfg: ProbeConfig) -> SolverOptions:
    return SolverOptions(cfg.max_iter, cfg.tol, cfg.epochs)


def probe_data(plan: ProbePlan, kind: ProbeKind) -> ProbeData:
    """Folds and targets of ``plan``; the search subsample only where the kind's search is not exact anyway."""
    return ProbeData(plan.fold, plan.targets(), plan.n_classes, None if kind.exact_search else plan.search)


def penalty_grid(cfg: ProbeConfig, plan: ProbePlan, kind: ProbeKind) -> list[float]:
    """The penalties to choose from: those given, or the kind's per-item grid scaled by the training size."""
    n_train = float(np.mean([(plan.fold != f).sum() for f in range(plan.folds)]))
    return cfg.reg_values or [g * n_train for g in kind.per_item_grid]


def search_view(feats: Features, data: ProbeData) -> tuple[Features, ProbeData]:
    """The search subsample's items alone, where there is one and the items are in memory: the search's fits then
    pass over those items instead of over all of them with the rest masked out (the same problem, as a masked item
    adds nothing to any search fit; the fits' ``reg_scale`` was set from ``data`` before)."""
    if data.search is None or not feats.in_memory:
        return feats, data
    idx = np.nonzero(data.search)[0]
    view = Features(len(idx), feats.d, feats.mean, feats.inv_std, x=feats.x[torch.from_numpy(idx)])
    return view, ProbeData(data.fold[idx], data.targets[idx], data.n_classes, None)


def choose_regs(grid: list[float], kind: ProbeKind, feats: Features, data: ProbeData, opts: SolverOptions,
                folds: int) -> tuple[list[float], dict]:
    """Each outer fold's penalty: the one given, or the inner cross-validation's pick on its training folds; and
    the search's solver notes."""
    if len(grid) == 1:
        return grid * folds, {}
    fits = search_fits(data, grid, folds)
    found = kind.fit(*search_view(feats, data), fits, opts)
    return pick_regs(fits, found.scores, folds), {**found.notes, "fits": len(fits)}


def fit_hook(cfg: ProbeConfig, plan: ProbePlan, kind: ProbeKind, feats: Features) -> HookFits:
    """The penalty search, then every outer fold, its control (with the fold's penalty: the control probe gets
    the complexity the task's probe was given, as Hewitt & Liang compare them) and the final fit."""
    data, opts = probe_data(plan, kind), solver_options(cfg)
    regs, search = choose_regs(penalty_grid(cfg, plan, kind), kind, feats, data, opts, plan.folds)
    final_reg = sorted(regs)[len(regs) // 2]
    fits = outer_fits(plan.folds, regs, plan.control is not None, final_reg)
    return HookFits(regs, final_reg, fits, kind.fit(feats, data, fits, opts), search)

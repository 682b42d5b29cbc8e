"""What one hook of ``actlake probe`` will cost, before any hook runs: its work (items x dims x fits: the penalty
search, every fold, its control, the final fit) and its time, from a short timed sample of that work.

The sample is the first whole groups covering ``SAMPLE_ITEMS`` items (a prefix of the hook to read), with the
run's own folds and targets. A logistic solve is L-BFGS: its time is the number of objective passes times the
time of one pass, which grows with the items and the fits solved together. So the sample is timed three ways:
reading it; one pass of the search's fits and one of the outer fits, each scaled to the items they pass over in
the run; and one solve to convergence of a few of the run's fits (one inner split of the first fold's search, at
every penalty, scaled to the sample's size per training item), whose pass count stands for the run's (on the
concepts demo 154-174 passes on a 2,012-row sample where the hooks' searches took 100-208 and their outer fits
26-133). A sample solve of every fit would cost far more than the few per cent an estimate may take: its passes
cost a fixed overhead that a small sample cannot spread. Kinds solved in one pass (ridge) have their fit on the
sample timed and scaled instead. On the demo the estimates were 0.57-1.54 of the measured time on 2 cores under
a load of ~10, 0.70-1.05 at ~2 (docs/benchmarks.md, issue 42).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from analysis.common.cost import CostEstimate, timed
from analysis.common.perhook import HookTask
from analysis.probe.config import ProbeConfig
from analysis.probe.features import load_features, streams
from analysis.probe.hookfit import ProbeRun, penalty_grid, solver_options
from analysis.probe.problems import Features, Fit, ProbeData, outer_fits, search_fits
from analysis.probe.registry import ProbeKind, get_probe
from analysis.probe.targets import ProbePlan
from analysis.probe.threads import hook_threads

SAMPLE_ITEMS = 2000  #: items of the timed sample (whole groups)


def sample_plan(plan: ProbePlan, items: int = SAMPLE_ITEMS) -> ProbePlan:
    """The first whole groups, in item order, that hold about ``items`` items (the plan itself when it has no
    more): a prefix of the hook to read, with the plan's own folds, targets and search subsample."""
    if plan.n_items <= items:
        return plan
    sel = np.isin(plan.groups, np.unique(plan.groups[:items]))
    new_index = np.cumsum(sel) - 1
    row_sel = sel[plan.item_of_row]
    some = lambda a: None if a is None else a[sel]  # noqa: E731
    return dataclasses.replace(plan, rows=plan.rows[row_sel], item_of_row=new_index[plan.item_of_row[row_sel]],
                               n_items=int(sel.sum()), y=plan.y[sel], groups=plan.groups[sel], fold=plan.fold[sel],
                               control=some(plan.control), search=some(plan.search), notes=[])


@dataclasses.dataclass
class _Phase:
    """One solve of the run: its fits, and how many items each of its passes reads in the full run."""

    name: str
    fits: list[Fit]
    items: int


def _phases(cfg: ProbeConfig, plan: ProbePlan, kind: ProbeKind, sample: ProbeData, streamed: bool) -> list[_Phase]:
    """The run's solves with the sample's fits: penalties scaled to the sample's size (the same per training
    item), so that a solve on it converges as the run's would."""
    per_item = len(sample.fold) / plan.n_items
    grid = [g * per_item for g in penalty_grid(cfg, plan, kind)]
    out = []
    if len(grid) > 1:
        searched = plan.search is not None and not kind.exact_search and not streamed
        out.append(_Phase("search", search_fits(sample, grid, plan.folds),
                          int(plan.search.sum()) if searched else plan.n_items))
    out.append(_Phase("fits", outer_fits(plan.folds, [min(grid)] * plan.folds, plan.control is not None, min(grid)),
                      plan.n_items))
    return out


def _work(cfg: ProbeConfig, plan: ProbePlan, kind: ProbeKind, d: int, phases: list[_Phase]) -> str:
    """``36,148 rows × 384 dims × (60 search fits: 5 folds × 3 inner × 4 penalties; 5 folds + 5 controls +
    1 final)``."""
    what = "rows" if plan.pool == "none" else "pooled examples"
    parts = []
    search = next((p for p in phases if p.name == "search"), None)
    if search is not None:
        grid = len(penalty_grid(cfg, plan, kind))
        inner = len(search.fits) // (plan.folds * grid)
        on = f" on {search.items:,} {what}" if search.items < plan.n_items else ""
        parts.append(f"{len(search.fits)} search fits{on}: {plan.folds} folds × {inner} inner × {grid} penalties")
    control = f" + {plan.folds} controls" if plan.control is not None else ""
    parts.append(f"{plan.folds} folds{control} + 1 final")
    classes = f" × {plan.n_classes} classes" if plan.n_classes > 2 else ""
    return f"{plan.n_items:,} {what} × {d} dims{classes} × ({'; '.join(parts)})"


def _passes(kind: ProbeKind, cfg: ProbeConfig, feats: Features, data: ProbeData, first: _Phase) -> tuple[int, float]:
    """Objective passes of a solve to convergence, on the sample, of the first outer fold's fits of the run's
    first solve (the search's first inner split at every penalty, or the fold's fit and control), and its
    seconds. A batched solve ends when its slowest fit has converged, so its passes depend on the mix of
    penalties more than on the number of fits: one fit alone converged in 8 passes on planted data where the
    run's search took 84, while the 4 penalties of one inner split took 59 (the 12 of fold 0: 61). Its time per
    pass is not the run's: on a sample this small the solver's own work per pass (the preconditioner's products,
    the line search) weighs as much as the objective, which it does not on the whole hook."""
    fits = [f for f in first.fits if f.fold == 0]
    fits = [f for f in fits if f.test_folds == fits[0].test_folds]
    res, seconds = timed(lambda: kind.fit(feats, data, fits, solver_options(cfg)))
    return int(res.notes.get("evaluations", 1)), seconds


def _seconds(cfg: ProbeConfig, plan: ProbePlan, kind: ProbeKind, feats: Features, data: ProbeData,
             phases: list[_Phase], streamed: bool) -> tuple[float, str]:
    """One hook's fitting time from the sample, and how it was found."""
    m = feats.n
    if kind.pass_cost is None:
        total = sum(timed(lambda p=p: kind.fit(feats, data, p.fits, solver_options(cfg)))[1] * p.items / m
                    for p in phases)
        return total, "its fits timed on the sample, scaled"
    passes, solve = (cfg.epochs, 0.0) if streamed else _passes(kind, cfg, feats, data, phases[0])
    total, said = 0.0, []
    for p in phases:
        c = kind.pass_cost(feats, data, p.fits)
        total += (passes * c.per_pass + c.setup) * p.items / m + c.fixed
        said.append(f"{c.per_pass * 1000:.0f} ms ({len(p.fits)} fits)")
    how = (f"{cfg.epochs} minibatch epochs" if streamed else
           f"fold 0's {phases[0].name} solve took {passes} passes ({solve:.1f} s)")
    return total, f"one pass {', '.join(said)}; {how}"


def _cores(cfg: ProbeConfig) -> int:
    """The threads the hooks will start from: --threads, 1 in a Ray task, else every core (``run_pending_hooks``)."""
    if cfg.threads:
        return cfg.threads
    return 1 if cfg.workers > 1 or cfg.address else (os.cpu_count() or 1)


def estimate_hook(task: HookTask[ProbeConfig, ProbeRun], hook: str) -> CostEstimate:
    """The work and time of probing ``hook``, from a short timed sample of it (with the threads a hook will use)."""
    cfg, plan, ds = task.cfg, task.plan.targets, task.ds
    kind, d = get_probe(task.plan.kind), ds.hook_spec(hook).numel
    before = torch.get_num_threads()
    threads = hook_threads(cfg.threads, cfg.workers, cfg.address, plan.n_items * d, _cores(cfg)) or _cores(cfg)
    torch.set_num_threads(threads)
    try:
        sub = sample_plan(plan)
        feats, read = timed(lambda: load_features(ds, hook, sub, 1 << 62))
        streamed = streams(ds, hook, plan, cfg.budget_bytes)
        data = ProbeData(sub.fold, sub.targets(), sub.n_classes, None)
        phases = _phases(cfg, plan, kind, data, streamed)
        fitting, how = _seconds(cfg, plan, kind, feats, data, phases, streamed)
    finally:
        torch.set_num_threads(before)
    reading = read * plan.n_items / sub.n_items * (1 + (cfg.epochs if streamed else 0))
    basis = (f"timed sample: {sub.n_items:,} of {plan.n_items:,} items read in {read:.2f} s; {how}; scaled to "
             f"{plan.n_items:,} items; {threads} torch thread(s)")
    seconds = reading + fitting
    return CostEstimate(_work(cfg, plan, kind, d, phases), seconds, basis, {"read": reading, "fit": fitting,
                                                                            "hook": seconds})


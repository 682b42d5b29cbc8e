"""Probe kinds by name. Each file under ``probes/`` declares its kind (the tasks it solves, its default search
grid, how it fits a batch of problems) and registers it here; ``probes/__init__.py`` lists the files and
``analysis.probe`` imports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from analysis.probe.problems import Features, Fit, FitResult, ProbeData
from shards.registry import Registry


@dataclass(frozen=True)
class SolverOptions:
    """How hard a probe kind works: iteration caps and tolerances, the minibatch settings when streaming."""

    max_iter: int = 200
    tol: float = 1e-4  #: largest |gradient| of the (per-item) objective at convergence
    epochs: int = 8  #: streaming minibatch passes
    batch_size: int = 4096  #: streaming minibatch rows
    lr: float = 0.01  #: streaming minibatch Adam learning rate


class FitFn(Protocol):
    def __call__(self, feats: Features, data: ProbeData, fits: list[Fit], opts: SolverOptions) -> FitResult: ...


@dataclass(frozen=True)
class PassCost:
    """One iterative solve of a batch of fits on some items, timed in parts: each objective pass takes
    ``per_pass`` seconds, after a setup of ``setup`` seconds (both growing with the items) and ``fixed`` seconds
    that do not (a d x d eigendecomposition)."""

    per_pass: float
    setup: float = 0.0
    fixed: float = 0.0


class PassCostFn(Protocol):
    def __call__(self, feats: Features, data: ProbeData, fits: list[Fit]) -> PassCost: ...


@dataclass(frozen=True)
class ProbeKind:
    """A registered probe: its name, the tasks it solves, its ``--reg auto`` grid as penalties per training
    item (scaled to each fit's scikit-learn units by its training size), and its batched fit."""

    name: str
    tasks: tuple[str, ...]
    metric: str
    reg_name: str  #: what the penalty is called in scikit-learn (``1/C``, ``alpha``)
    per_item_grid: tuple[float, ...]
    fit: FitFn
    exact_search: bool = False  #: the penalty search is cheap and exact on all items (no subsample)
    #: iterative kinds: times one objective pass of ``fits`` (the cost estimate multiplies it by the passes a
    #: solve takes); None: one pass solves every fit, and the estimate times the fit itself
    pass_cost: PassCostFn | None = None


PROBES: Registry[ProbeKind] = Registry("probe")
register, get_probe = PROBES.register, PROBES.lookup


def probe_for_task(task: str) -> ProbeKind:
    """The default probe of a task: the first registered kind that solves it."""
    return next(k for k in PROBES.values() if task in k.tasks)

"""Statistic families by name. Each file of ``analysis/geometry`` declares one family (what it needs, how it
accumulates a hook's rows in one streaming pass, what it reports) and registers it here;
``analysis/geometry/__init__.py`` imports the files.

A family's accumulator sees every batch of one hook's rows in row order (``update``) and then the run's seeded
sample of rows (``finish``); it never reads or writes anything itself: the hook's task streams the rows and
writes what ``finish`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from shards.registry import Registry


@dataclass
class Definition:
    """How a reported number is defined: its definition's name, where it comes from, exact or sampled."""

    name: str
    source: str = ""
    exact: bool = True

    def to_json(self, sample_size: int) -> dict:
        return {"definition": self.name, "source": self.source, "exact": self.exact,
                **({} if self.exact else {"sample_size": sample_size})}


@dataclass(kw_only=True)
class Batch:
    """Consecutive rows of one hook (float64, ``(n, d)``) starting at global row ``start``, with their ids and,
    where the run needs them, the same rows of other hooks."""

    x: np.ndarray
    start: int
    example_id: np.ndarray
    position: np.ndarray
    token_id: np.ndarray
    label: np.ndarray | None = None  #: class codes (-1: no label)
    phase: np.ndarray | None = None  #: True for generated tokens, when the dataset marks them
    prev: np.ndarray | None = None  #: the previous hook of the residual chain (layer change)
    attn: np.ndarray | None = None  #: attn.N, mlp.N and the residual entering block N (depth efficiency)
    mlp: np.ndarray | None = None
    resid_in: np.ndarray | None = None
    norms: np.ndarray | None = None  #: ‖x‖₂ per row, computed once for every family

    def __post_init__(self) -> None:
        if self.norms is None:
            self.norms = np.sqrt(np.einsum("ij,ij->i", self.x, self.x))


@dataclass
class Sample:
    """The run's seeded sample of rows (the same rows for every hook) as this hook holds them."""

    rows: np.ndarray  #: global row indices, ascending
    x: np.ndarray  #: float64 (s, d)
    label: np.ndarray | None = None
    lens: object | None = None  #: the logit lens' inputs (``logit_lens.LensInputs``), when it runs
    position: np.ndarray | None = None


@dataclass
class StatResult:
    """What a family reports for one hook."""

    scalars: dict[str, float | str | None] = field(default_factory=dict)  #: columns of stats.parquet
    definitions: dict[str, Definition] = field(default_factory=dict)  #: for summary.json
    per_dim: dict[str, np.ndarray] = field(default_factory=dict)  #: columns of per_dim.parquet
    tables: dict[str, list[dict]] = field(default_factory=dict)  #: rows of other tables (massive, spectrum, ...)

    def merge(self, other: StatResult) -> None:
        self.scalars.update(other.scalars)
        self.definitions.update(other.definitions)
        self.per_dim.update(other.per_dim)
        for k, rows in other.tables.items():
            self.tables.setdefault(k, []).extend(rows)


@dataclass(kw_only=True)
class HookContext:
    """What a family knows of a hook before its pass: the settings and the hook's place in the model."""

    hook: str
    width: int
    settings: object  #: the run's ``StatsConfig``
    post_activation: bool = False  #: mlp_hidden.N: a nonlinearity's output
    classes: list[str] = field(default_factory=list)
    prev: str | None = None
    sublayers: tuple[str, str, str] | None = None  #: (attn.N, mlp.N, residual entering block N)
    lens: bool = False  #: the logit lens applies to this hook
    #: stores a block of per-row values (name, block index, array) for a cross-hook step (voids)
    emit: Callable[[str, int, np.ndarray], None] | None = None


class Accumulator(Protocol):
    def update(self, batch: Batch) -> None: ...

    def finish(self, sample: Sample) -> StatResult: ...


@runtime_checkable
class TwoPass(Protocol):
    """An accumulator that needs the hook's rows a second time, after ``update`` has seen them all (Davies–Bouldin:
    distances to class centroids known only at the end of the first pass)."""

    def rescan(self, batch: Batch) -> None: ...


class SampleOnly:
    """Base of a family computed on the sample alone: nothing to do per batch."""

    def __init__(self, ctx: HookContext) -> None:
        self.ctx = ctx

    def update(self, batch: Batch) -> None:
        pass


@dataclass(frozen=True)
class Statistic:
    """A registered family: ``make`` returns the hook's accumulator, or None where the family does not apply;
    ``order``: where it is listed and run among the families (smaller first: cheap per-batch ones before the
    sample-based ones, the logit lens last)."""

    name: str
    help: str
    make: Callable[[HookContext], Accumulator | None]
    order: int
    needs_label: bool = False


STATISTICS: Registry[Statistic] = Registry("statistic")
register, get_statistic = STATISTICS.register, STATISTICS.lookup


def statistic_names() -> list[str]:
    """The families in the order they are listed and run in (each family's ``order``)."""
    return STATISTICS.names()

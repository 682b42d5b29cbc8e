"""What a stats run does (``StatsPlan``), decided once in the driver before any hook is read: which families
apply to which hooks, the residual chain (layer change, voids), the seeded sample, the logit lens' inputs
(``lens_inputs.py``). Every bad input fails here, naming the problem and the fix; ``plan_stats`` runs it all."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from analysis.common.hooks import layer_index
from analysis.geometry.config import StatsConfig
from analysis.geometry.lens_inputs import plan_lens
from analysis.geometry.logit_lens import LensInputs
from shards.errors import ActlakeError
from shards.reader import Dataset


class StatsInputError(ActlakeError, ValueError):
    """The dataset or the options cannot give what the run asks for."""


@dataclass
class StatsPlan:
    hooks: list[str]
    families: list[str]
    sample_rows: np.ndarray
    classes: list[str] = field(default_factory=list)
    prev: dict[str, str] = field(default_factory=dict)  #: hook -> the chain hook before it (layer change)
    sublayers: dict[str, tuple[str, str, str]] = field(default_factory=dict)  #: resid.N -> (attn.N, mlp.N, h_N)
    chain: list[str] = field(default_factory=list)  #: embed / resid.N hooks asked for, in layer order
    lens_hooks: list[str] = field(default_factory=list)
    lens: LensInputs | None = None
    phase_column: str | None = None
    notes: list[str] = field(default_factory=list)


def is_residual(hook: str) -> bool:
    return hook == "embed" or re.fullmatch(r"resid\.\d+", hook) is not None


def drop_family(plan: StatsPlan, cfg: StatsConfig, family: str, why: str, fix: str) -> None:
    """A family that cannot run: an error when it was named, a note under ``all``."""
    if cfg.explicit:
        raise StatsInputError(f"--stats {family}: {why}. {fix}")
    plan.families.remove(family)
    plan.notes.append(f"{family} skipped: {why}")


def _layer_change(plan: StatsPlan, cfg: StatsConfig, width: dict[str, int]) -> list[tuple[str, str]]:
    """Which consecutive residual hooks the layer change compares (``plan.prev``); the pairs of different widths,
    which it cannot (an error when norms were named, a note under ``all``)."""
    pairs = list(zip(plan.chain, plan.chain[1:], strict=False))
    bad = [(a, b) for a, b in pairs if width[a] != width[b]]
    if bad and "norms" in plan.families:
        text = ", ".join(f"{a} ({width[a]}) and {b} ({width[b]})" for a, b in bad)
        if cfg.explicit:
            raise StatsInputError(f"layer change compares the same rows of consecutive hooks, but {text} differ in "
                                  "width. Ask for hooks of one width with --hooks, or leave out norms.")
        plan.notes.append(f"layer change skipped between {text}: different widths")
    plan.prev = {b: a for a, b in pairs if width[a] == width[b]}
    return bad


def _sublayers(plan: StatsPlan, ds: Dataset, width: dict[str, int]) -> None:
    """resid.N -> (attn.N, mlp.N, the residual entering block N), where the dataset holds all three (depth
    efficiency)."""
    for h in plan.chain:
        n = layer_index(h)
        parts = (f"attn.{n}", f"mlp.{n}", "embed" if n == 0 else f"resid.{n - 1}")
        if h != "embed" and all(p in ds.hooks and ds.hook_spec(p).numel == width[h] for p in parts):
            plan.sublayers[h] = parts


def plan_chain(plan: StatsPlan, cfg: StatsConfig, ds: Dataset) -> None:
    """The residual chain (embed, resid.N in layer order): layer change, sublayers and voids."""
    plan.chain = [h for h in plan.hooks if is_residual(h)]
    width = {h: ds.hook_spec(h).numel for h in plan.hooks}
    bad = _layer_change(plan, cfg, width)
    _sublayers(plan, ds, width)
    if "voids" in plan.families and len(plan.chain) < 2:
        drop_family(plan, cfg, "voids", f"voids need at least two residual hooks (embed, resid.N); asked for "
                    f"{plan.chain}", "Use --hooks 'embed,resid.*'.")
    if "voids" in plan.families and bad:
        drop_family(plan, cfg, "voids", "the residual hooks differ in width", "Use hooks of one width.")


def plan_labels(plan: StatsPlan, cfg: StatsConfig, ds: Dataset) -> None:
    if "clusters" not in plan.families:
        return
    if not cfg.label:
        drop_family(plan, cfg, "clusters", "no --label given", "Give --label COLUMN.")
        return
    if cfg.label not in ds.columns:
        raise StatsInputError(f"--label {cfg.label!r}: the dataset has no such column; its columns are "
                              f"{', '.join(ds.columns)}")
    values = ds.metadata_table([cfg.label]).column(cfg.label).drop_null().unique().to_pylist()
    plan.classes = sorted(str(v) for v in values)
    if len(plan.classes) < 2:
        raise StatsInputError(f"--label {cfg.label!r} has {len(plan.classes)} class(es) {plan.classes}: cluster "
                              "indices need at least two")


def sample_rows(num_rows: int, n: int, seed: int) -> np.ndarray:
    """The run's seeded sample: ``n`` distinct global row indices (all rows when fewer), ascending."""
    if n >= num_rows:
        return np.arange(num_rows, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(num_rows, size=n, replace=False)).astype(np.int64)


def plan_stats(cfg: StatsConfig, ds: Dataset, hooks: list[str]) -> StatsPlan:
    """Check the inputs and decide the run (see the module docstring)."""
    if ds.num_rows == 0:
        raise StatsInputError(f"{ds.storage.display()} has no rows")
    plan = StatsPlan(hooks, cfg.families(), sample_rows(ds.num_rows, cfg.sample, cfg.seed))
    plan_chain(plan, cfg, ds)
    plan_labels(plan, cfg, ds)
    if "logit_lens" in plan.families:
        plan.lens, plan.lens_hooks, problem = plan_lens(cfg, ds, plan.chain, plan.sample_rows)
        if problem:
            drop_family(plan, cfg, "logit_lens", *problem)
    if cfg.phase_column in ds.columns:
        plan.phase_column = cfg.phase_column
    return plan

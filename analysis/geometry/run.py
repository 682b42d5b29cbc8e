"""``actlake stats``: layer statistics of every hook of a dataset, one streaming pass per hook.

The driver checks the inputs and decides the run (``plan.plan_stats``); each hook is then one task (in this
process or on Ray) that streams its rows once through every family's accumulator and writes its results under
``OUT/hooks/`` (per-row norms for the voids in blocks beside them). A killed run rerun with the same command
skips the hooks already written. The last step applies the void rule across hooks and writes
``stats.parquet``, ``per_dim.parquet``, ``massive.parquet``, the other tables, ``summary.json`` and the plots.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from analysis.common.hooks import layer_index
from analysis.common.inputs import RunSummary
from analysis.common.perhook import HOOKS, Assembly, HookAnalysis, HookTask, run_hook_analysis
from analysis.common.results import Results, npy_bytes, read_npy
from analysis.geometry.config import RUN_NEUTRAL, StatsConfig
from analysis.geometry.passes import estimate_hook, run_pass
from analysis.geometry.plan import StatsPlan, plan_stats
from analysis.geometry.registry import Definition
from analysis.geometry.report import write_plots
from analysis.geometry.voids import BLOCK_ROWS, SOURCE, VoidCounter
from shards.reader import Dataset
from shards.records import JsonRecord

log = logging.getLogger("actlake.stats")
CONFIG = StatsConfig
TABLES = ("massive", "norms_by_position", "spectrum")


@dataclass(kw_only=True)
class HookOutcome(JsonRecord):
    """One hook's results (``OUT/hooks/HOOK.json``)."""

    hook: str
    scalars: dict
    definitions: dict
    per_dim: dict[str, list]
    tables: dict[str, list[dict]]
    seconds: float = 0.0


@dataclass(kw_only=True)
class StatsSummary(RunSummary, JsonRecord):
    """``summary.json``."""

    hooks: list[str]
    families: list[str]
    sample_size: int
    seed: int
    statistics: dict[str, dict]  #: column -> definition, source, exact or sampled (and the sample size)
    values: dict[str, dict]  #: hook -> its row of stats.parquet
    notes: list[str] = field(default_factory=list)
    out: str = ""


def stats_hook(task: HookTask[StatsConfig, StatsPlan], hook: str) -> HookOutcome:
    """One hook's pass over the pinned dataset; per-row norm blocks go under ``OUT/hooks/HOOK/``."""

    def emit(name: str, block: int, values: np.ndarray) -> None:
        task.out.storage.put_bytes(f"{hook}/{name}-{block:05d}.npy", npy_bytes(values))

    res = run_pass(task.cfg, task.plan, task.ds, hook, emit)
    sample_size = len(task.plan.sample_rows)
    log.info("%s: %d rows", hook, res.scalars["rows"])
    return HookOutcome(hook=hook, scalars=res.scalars,
                       definitions={k: d.to_json(sample_size) for k, d in res.definitions.items()},
                       per_dim={k: np.asarray(v).tolist() for k, v in res.per_dim.items()}, tables=res.tables)


def void_fractions(plan: StatsPlan, num_rows: int, alpha: float, out: Results) -> dict[str, dict[str, float]]:
    """Per chain hook (after the first): the fraction of tokens for which its layer is a void, overall and per
    phase, from the norm blocks the passes stored."""
    chain = plan.chain
    counter = VoidCounter(len(chain) - 1, alpha)
    hooks = out.child(HOOKS).storage
    for block in range(math.ceil(num_rows / BLOCK_ROWS)):
        norms = np.stack([read_npy(hooks.get_bytes(f"{h}/norms-{block:05d}.npy")) for h in chain])
        phase = read_npy(hooks.get_bytes(f"{chain[0]}/phase-{block:05d}.npy")) if plan.phase_column else None
        counter.add(norms, phase)
    result: dict[str, dict[str, float]] = {h: {} for h in chain[1:]}
    for key, column in (("all", "void_fraction"), ("prompt", "void_fraction_prompt"),
                        ("generated", "void_fraction_generated")):
        fr = counter.fractions(key)
        if fr is not None and (key == "all" or plan.phase_column):
            for h, v in zip(chain[1:], fr, strict=True):
                result[h][column] = float(v)
    return result


def _finite(v):
    """NaN (an undefined statistic, e.g. TwoNN on too few distinct points) as null: JSON and Parquet agree."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _tables(hooks: list[str], outcomes: dict[str, HookOutcome], voids: dict, out: Results) -> list[dict]:
    rows = []
    for h in hooks:
        o = outcomes[h]
        rows.append({"hook": h, "layer_index": layer_index(h), "rows": o.scalars.get("rows"),
                     **{k: _finite(v) for k, v in o.scalars.items() if k != "rows"}, **voids.get(h, {})})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out.table("stats.parquet", pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]))
    per_dim = [{"hook": h, "dim": i, **{k: v[i] for k, v in outcomes[h].per_dim.items()}}
               for h in hooks for i in range(len(next(iter(outcomes[h].per_dim.values()), [])))]
    if per_dim:
        out.table("per_dim.parquet", pa.Table.from_pylist(per_dim))
    for name in TABLES:
        table_rows = [r for h in hooks for r in outcomes[h].tables.get(name, [])]
        if table_rows:
            out.table(f"{name}.parquet", pa.Table.from_pylist(table_rows))
    return rows


def _definitions(outcomes: dict[str, HookOutcome], plan: StatsPlan, alpha: float) -> dict[str, dict]:
    defs: dict[str, dict] = {}
    for o in outcomes.values():
        defs.update(o.definitions)
    if "voids" in plan.families:
        d = Definition(f"fraction of tokens for which the layer is a void (LAC: δ_l < α·range(δ_<l), α={alpha:g})",
                       SOURCE)
        defs["void_fraction"] = d.to_json(len(plan.sample_rows))
    return defs


def _describe(cfg: StatsConfig, plan: StatsPlan, ds: Dataset, hooks: list[str]) -> str:
    return (f"statistics {', '.join(plan.families)} over {', '.join(hooks)} ({ds.num_rows} rows of version "
            f"{ds.version}, sample {len(plan.sample_rows)})")


def _assemble(run: Assembly[StatsConfig, StatsPlan], outcomes: dict[str, HookOutcome]) -> StatsSummary:
    cfg, plan, ds, hooks, out = run.cfg, run.plan, run.ds, run.hooks, run.out
    voids = void_fractions(plan, ds.num_rows, cfg.void_alpha, out) if "voids" in plan.families else {}
    rows = _tables(hooks, outcomes, voids, out)
    write_plots(out, rows, outcomes, cfg.label)
    return StatsSummary(**run.recorded, hooks=hooks, families=plan.families, sample_size=len(plan.sample_rows),
                        seed=cfg.seed,
                        statistics=_definitions(outcomes, plan, cfg.void_alpha), values={r["hook"]: r for r in rows},
                        notes=plan.notes, out=out.display())


def _estimate(task: HookTask[StatsConfig, StatsPlan], hook: str):
    return estimate_hook(task.cfg, task.plan, task.ds, hook)


STATS = HookAnalysis(name="stats", command="stats", neutral=RUN_NEUTRAL, plan=plan_stats, hook=stats_hook,
                     outcome=HookOutcome, assemble=_assemble, summary=StatsSummary, describe=_describe,
                     estimate=_estimate)


def run(cfg: StatsConfig) -> StatsSummary:
    """Layer statistics of ``cfg.hooks`` (or resume a killed run); returns what ``summary.json`` holds.

    Example::

        run(StatsConfig(data="demo-data/minilm", hooks=["embed", "resid.*"], label="label", out="runs/stats"))
    """
    return run_hook_analysis(STATS, cfg)


stats = run

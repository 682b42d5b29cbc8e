"""``actlake stats``: layer statistics of every hook of a dataset, one streaming pass per hook.

The driver checks the inputs and decides the run (``plan.plan_stats``); each hook is then one task (in this
process or on Ray) that streams its rows once through every family's accumulator and writes its results under
``OUT/hooks/`` (per-row norms for the voids in blocks beside them). A killed run rerun with the same command
skips the hooks already written. The last step applies the void rule across hooks and writes
``stats.parquet``, ``per_dim.parquet``, ``massive.parquet``, the other tables, ``summary.json`` and the plots.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa
import torch

from analysis.common.fanout import run_pending_hooks
from analysis.common.hooks import layer_index
from analysis.common.results import Results, npy_bytes, read_npy
from analysis.common.rundir import RUN, RunDir, RunRecord, fingerprint_of, output_lock, run_settings
from analysis.geometry.config import RUN_NEUTRAL, StatsConfig
from analysis.geometry.passes import HookJob, run_pass
from analysis.geometry.plan import StatsPlan, plan_stats
from analysis.geometry.registry import Definition
from analysis.geometry.report import write_plots
from analysis.geometry.voids import BLOCK_ROWS, SOURCE, VoidCounter
from shards.reader import open_dataset
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.stats")
CONFIG = StatsConfig
SUMMARY, HOOKS = "summary.json", "hooks"
TABLES = ("massive", "norms_by_position", "spectrum")


@dataclass
class HookOutcome(JsonRecord):
    """One hook's results (``OUT/hooks/HOOK.json``)."""

    hook: str
    scalars: dict
    definitions: dict
    per_dim: dict[str, list]
    tables: dict[str, list[dict]]
    seconds: float = 0.0


@dataclass
class StatsSummary(JsonRecord):
    """``summary.json``."""

    dataset: str
    dataset_id: str
    dataset_version: int
    hooks: list[str]
    families: list[str]
    sample_size: int
    seed: int
    statistics: dict[str, dict]  #: column -> definition, source, exact or sampled (and the sample size)
    values: dict[str, dict]  #: hook -> its row of stats.parquet
    notes: list[str] = field(default_factory=list)
    out: str = ""


def stats_hook(job: HookJob, hook: str) -> HookOutcome:
    """One hook's pass; its results go under ``OUT/hooks/`` (the JSON last: it marks the hook done)."""
    t0 = time.perf_counter()
    cfg = job.cfg
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = open_dataset(cfg.data, cfg.storage)
    out = Results(cfg.out, cfg.storage).child(HOOKS)

    def emit(name: str, block: int, values: np.ndarray) -> None:
        out.storage.put_bytes(f"{hook}/{name}-{block:05d}.npy", npy_bytes(values))

    res = run_pass(job, ds, hook, emit)
    sample_size = len(job.plan.sample_rows)
    outcome = HookOutcome(hook, res.scalars, {k: d.to_json(sample_size) for k, d in res.definitions.items()},
                          {k: np.asarray(v).tolist() for k, v in res.per_dim.items()}, res.tables,
                          round(time.perf_counter() - t0, 3))
    out.json(f"{hook}.json", outcome.to_json())
    log.info("%s: %d rows in %.1fs", hook, res.scalars["rows"], outcome.seconds)
    return outcome


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


def _start(cfg: StatsConfig, ds, hooks: list[str], out: Results) -> tuple[RunDir, str, dict]:
    settings = run_settings(cfg, RUN_NEUTRAL, dataset_id=ds.dataset_id, dataset_version=ds.version, hooks=hooks)
    rundir = RunDir(out.storage, SUMMARY, resume_marker=RUN)
    return rundir, rundir.state(settings, cfg.overwrite), settings


def _stats(cfg: StatsConfig) -> StatsSummary:
    ds, hooks = cfg.open()
    out = Results(cfg.out, cfg.storage)
    rundir, state, settings = _start(cfg, ds, hooks, out)
    if state == "done":
        log.info("%s already holds this finished run", out.display())
        return StatsSummary.from_json(rundir.summary())
    plan = plan_stats(cfg, ds, hooks)  # every check of the input happens here, before any hook is read
    for note in plan.notes:
        log.info("%s", note)
    log.info("statistics %s over %s (%d rows, sample %d)", ", ".join(plan.families), ", ".join(hooks),
             ds.num_rows, len(plan.sample_rows))
    if state == "new":
        rundir.start(RunRecord(fingerprint_of(settings), settings, dataclasses.asdict(cfg),
                               ds.manifest.ref(ds.storage.display(), hooks), {"seed": cfg.seed}))
    run_pending_hooks(partial(stats_hook, HookJob(cfg, plan)), hooks,
                      lambda h: out.storage.exists(f"{HOOKS}/{h}.json"), workers=cfg.workers, address=cfg.address,
                      threads=cfg.threads, logger=log)
    outcomes = {h: HookOutcome.from_json(out.read_json(f"{HOOKS}/{h}.json")) for h in hooks}
    voids = void_fractions(plan, ds.num_rows, cfg.void_alpha, out) if "voids" in plan.families else {}
    rows = _tables(hooks, outcomes, voids, out)
    write_plots(out, rows, outcomes, cfg.label)
    summary = StatsSummary(ds.storage.display(), ds.dataset_id, ds.version, hooks, plan.families,
                           len(plan.sample_rows), cfg.seed, _definitions(outcomes, plan, cfg.void_alpha),
                           {r["hook"]: r for r in rows}, plan.notes, out.display())
    rundir.finish(summary.to_json())
    return summary


def run(cfg: StatsConfig) -> StatsSummary:
    """Layer statistics of ``cfg.hooks`` (or resume a killed run); returns what ``summary.json`` holds.

    Example::

        run(StatsConfig(data="demo-data/minilm", hooks=["embed", "resid.*"], label="label", out="runs/stats"))
    """
    with output_lock(Storage(cfg.out, cfg.storage), "stats output"):
        return _stats(cfg)


stats = run

"""``actlake probe``: linear probes of one label over every hook of a dataset.

The driver reads the labels once and decides items, folds and control targets (``targets.plan_probe``); each
hook is then one task (in this process or on Ray) that reads only its own hook, picks the penalty by inner
cross-validation, fits every fold (and control) as one batched problem, and writes its results under
``OUT/hooks/``. A killed job rerun with the same command skips the hooks already written; the last step joins
them into ``probe_results.parquet``, ``summary.json``, ``probe_accuracy.png`` and ``directions.safetensors``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa
import torch

from analysis.common.fanout import run_pending_hooks
from analysis.common.hooks import layer_index
from analysis.common.results import Results
from analysis.common.rundir import RUN, RunDir, RunRecord, fingerprint_of, output_lock, run_settings
from analysis.probe.config import RUN_NEUTRAL, ProbeConfig
from analysis.probe.directions import diff_in_means
from analysis.probe.features import load_features
from analysis.probe.problems import Fit, FitResult, ProbeData, outer_fits, pick_regs, search_fits
from analysis.probe.registry import ProbeKind, SolverOptions, get_probe, probe_for_task
from analysis.probe.report import accuracy_figure
from analysis.probe.summary import HookSummary, concept_depth
from analysis.probe.targets import ProbeInputError, ProbePlan, plan_probe
from shards.reader import open_dataset
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.probe")
CONFIG = ProbeConfig
SUMMARY, RESULTS, PLOT, DIRECTIONS, HOOKS = ("summary.json", "probe_results.parquet", "probe_accuracy.png",
                                             "directions.safetensors", "hooks")


@dataclass
class HookOutcome(JsonRecord):
    """One hook's results (``OUT/hooks/HOOK.json``; its tensors beside it in ``HOOK.safetensors``)."""

    hook: str
    layer_index: int
    rows: list[dict]  #: one per fold: the columns of probe_results.parquet
    reg: float
    solver: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ProbeSummary(JsonRecord):
    """``summary.json``."""

    label: str
    task: str
    classes: list[str]
    hooks: dict[str, dict]
    concept_depth: dict
    dataset_id: str
    rows_used: int
    seed: int
    metric: str = "accuracy"
    probe: str = "logistic"
    reg_units: str = "1/C"
    items: int = 0
    folds: int = 5
    group_by: str = "example_id"
    control: str = "none"
    pool: str = "none"
    dataset: str = ""
    dataset_version: int = 0
    notes: list[str] = field(default_factory=list)
    out: str = ""


@dataclass
class HookJob:
    """What each hook's task receives: the configuration, the plan and the probe kind's name."""

    cfg: ProbeConfig
    plan: ProbePlan
    kind: str


def _regs(job: HookJob, kind: ProbeKind, feats, data: ProbeData, opts: SolverOptions) -> list[float]:
    """Each outer fold's penalty: the one given, or the inner cross-validation's pick on its training folds."""
    plan = job.plan
    n_train = float(np.mean([(plan.fold != f).sum() for f in range(plan.folds)]))
    grid = job.cfg.reg_values or [g * n_train for g in kind.per_item_grid]
    if len(grid) == 1:
        return grid * plan.folds
    fits = search_fits(data, grid, plan.folds)
    found = kind.fit(feats, data, fits, opts)
    return pick_regs(fits, found.scores, plan.folds)


def _rows(hook: str, plan: ProbePlan, metric: str, fits: list[Fit], res: FitResult) -> list[dict]:
    counts = np.bincount(plan.fold, minlength=plan.folds)
    control = {f.fold: float(s) for f, s in zip(fits, res.scores, strict=True) if f.role == "control"}
    return [{"hook": hook, "layer_index": layer_index(hook), "fold": f.fold,
             "n_train": int(counts[list(f.train_folds)].sum()), "n_test": int(counts[f.fold]), "metric": metric,
             "value": float(s), "control_value": control.get(f.fold), "reg": float(f.reg)}
            for f, s in zip(fits, res.scores, strict=True) if f.role == "fold"]


def probe_hook(job: HookJob, hook: str) -> HookOutcome:
    """Probe one hook and write its results under ``OUT/hooks/`` (the JSON last: it marks the hook done)."""
    from safetensors.torch import save

    t0 = time.perf_counter()
    cfg, plan = job.cfg, job.plan
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = open_dataset(cfg.data, cfg.storage)
    kind = get_probe(job.kind)
    feats = load_features(ds, hook, plan, cfg.budget_bytes)
    data = ProbeData(plan.fold, plan.targets(), plan.n_classes, None if kind.exact_search else plan.search)
    opts = SolverOptions(cfg.max_iter, cfg.tol, cfg.epochs)
    regs = _regs(job, kind, feats, data, opts)
    final_reg = sorted(regs)[len(regs) // 2]
    fits = outer_fits(plan.folds, regs, plan.control is not None, final_reg)
    res = kind.fit(feats, data, fits, opts)
    rows = _rows(hook, plan, kind.metric, fits, res)
    final = next(i for i, f in enumerate(fits) if f.role == "final")
    tensors = {f"{hook}/probe": res.weights[final].contiguous(), f"{hook}/probe_bias": res.bias[final].contiguous()}
    if plan.task == "classify":
        for c, vec in zip(plan.classes, diff_in_means(feats, plan.y, plan.n_classes), strict=True):
            tensors[f"{hook}/diffmean/{c}"] = vec.contiguous()
    outcome = HookOutcome(hook, layer_index(hook), rows, float(final_reg), res.notes,
                          round(time.perf_counter() - t0, 3))
    out = Results(cfg.out, cfg.storage).child(HOOKS)
    out.storage.put_bytes(f"{hook}.safetensors", save(tensors, metadata={"hook": hook}))
    out.json(f"{hook}.json", outcome.to_json())
    mean = np.mean([r["value"] for r in rows])
    log.info("%s: %s %.4f over %d folds (%.1fs)", hook, kind.metric, mean, plan.folds, outcome.seconds)
    return outcome


def _kind(cfg: ProbeConfig, plan: ProbePlan) -> ProbeKind:
    kind = probe_for_task(plan.task) if cfg.probe == "auto" else get_probe(cfg.probe)
    if plan.task not in kind.tasks:
        other = probe_for_task(plan.task).name
        raise ProbeInputError(f"--probe {kind.name} does not {plan.task}; use --probe {other} (or --task)")
    return kind


def _assemble(cfg: ProbeConfig, plan: ProbePlan, kind: ProbeKind, ds, hooks: list[str],
              outcomes: dict[str, HookOutcome], out: Results) -> ProbeSummary:
    """The run's tables, plot and directions from every hook's results."""
    from safetensors.torch import load, save

    rows = [r for h in hooks for r in outcomes[h].rows]
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("hook", pa.string()), ("layer_index", pa.int32()), ("fold", pa.int32()), ("n_train", pa.int64()),
        ("n_test", pa.int64()), ("metric", pa.string()), ("value", pa.float64()), ("control_value", pa.float64()),
        ("reg", pa.float64())]))
    out.table(RESULTS, table)
    summaries = {}
    for h in hooks:
        values = [r["value"] for r in outcomes[h].rows]
        controls = [r["control_value"] for r in outcomes[h].rows if r["control_value"] is not None]
        summaries[h] = HookSummary.of(outcomes[h].layer_index, values, controls or None, outcomes[h].reg)
    depth = concept_depth(summaries, cfg.threshold)
    chance = float(np.bincount(plan.y).max() / len(plan.y)) if plan.task == "classify" else None
    out.figure(PLOT, accuracy_figure(summaries, kind.metric, plan.label, depth, chance))
    tensors = {}
    for h in hooks:
        tensors.update(load(out.storage.get_bytes(f"{HOOKS}/{h}.safetensors")))
    out.storage.put_bytes(DIRECTIONS, save(tensors, metadata={"label": plan.label, "classes": ",".join(plan.classes),
                                                              "space": "the hook's stored activation values"}))
    return ProbeSummary(plan.label, plan.task, plan.classes, {h: s.to_json() for h, s in summaries.items()},
                        depth.to_json(), ds.dataset_id, int(len(plan.rows)), cfg.seed, kind.metric, kind.name,
                        kind.reg_name, plan.n_items, plan.folds, cfg.group_column(ds.columns), cfg.control, plan.pool,
                        ds.storage.display(), ds.version, plan.notes, out.display())


def _probe(cfg: ProbeConfig) -> ProbeSummary:
    ds, hooks = cfg.open()
    out = Results(cfg.out, cfg.storage)
    settings = run_settings(cfg, RUN_NEUTRAL, dataset_id=ds.dataset_id, dataset_version=ds.version, hooks=hooks)
    rundir = RunDir(out.storage, SUMMARY, resume_marker=RUN)
    state = rundir.state(settings, cfg.overwrite)
    if state == "done":
        log.info("%s already holds this finished run", out.display())
        return ProbeSummary.from_json(rundir.summary())
    plan = plan_probe(cfg, ds)  # every check of the input happens here, before any hook is read
    kind = _kind(cfg, plan)
    for note in plan.notes:
        log.info("%s", note)
    log.info("%d items (%d rows) in %d folds by %s; probe %s; hooks %s", plan.n_items, len(plan.rows), plan.folds,
             cfg.group_column(ds.columns), kind.name, ", ".join(hooks))
    if state == "new":
        ref = ds.manifest.ref(ds.storage.display(), hooks)
        rundir.start(RunRecord(fingerprint_of(settings), settings, dataclasses.asdict(cfg), ref, {"seed": cfg.seed}))
    run_pending_hooks(partial(probe_hook, HookJob(cfg, plan, kind.name)), hooks,
                      lambda h: out.storage.exists(f"{HOOKS}/{h}.json"), workers=cfg.workers, address=cfg.address,
                      threads=cfg.threads, logger=log, verb="probed")
    outcomes = {h: HookOutcome.from_json(out.read_json(f"{HOOKS}/{h}.json")) for h in hooks}
    summary = _assemble(cfg, plan, kind, ds, hooks, outcomes, out)
    rundir.finish(summary.to_json())
    return summary


def run(cfg: ProbeConfig) -> ProbeSummary:
    """Probe ``cfg.label`` over ``cfg.hooks`` (or resume a killed run); returns what ``summary.json`` holds.

    Example::

        run(ProbeConfig(data="demo-data/minilm", hooks=["embed", "resid.*"], label="label", control="type",
                        out="runs/probe-concepts"))
    """
    with output_lock(Storage(cfg.out, cfg.storage), "probe output"):
        return _probe(cfg)


probe = run

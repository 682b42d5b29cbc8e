"""``actlake probe``: linear probes of one label over every hook of a dataset.

The driver reads the labels once and decides items, folds and control targets (``targets.plan_probe``); each
hook is then one task (in this process or on Ray) that reads only its own hook, picks the penalty by inner
cross-validation, fits every fold (and control) as one batched problem, and writes its results under
``OUT/hooks/``. A killed job rerun with the same command skips the hooks already written; the last step joins
them into ``probe_results.parquet``, ``summary.json``, ``probe_accuracy.png`` and ``directions.safetensors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from analysis.common.hooks import layer_index
from analysis.common.inputs import RunSummary
from analysis.common.perhook import HOOKS, Assembly, HookAnalysis, HookTask, run_hook_analysis
from analysis.probe.config import RUN_NEUTRAL, ProbeConfig
from analysis.probe.cost import estimate_hook
from analysis.probe.directions import diff_in_means
from analysis.probe.features import load_features
from analysis.probe.hookfit import ProbeRun, fit_hook
from analysis.probe.problems import Fit, FitResult
from analysis.probe.registry import ProbeKind, get_probe, probe_for_task
from analysis.probe.report import accuracy_figure
from analysis.probe.summary import HookSummary, concept_depth
from analysis.probe.targets import ProbeInputError, ProbePlan, plan_probe
from analysis.probe.threads import hook_threads
from shards.columns import EXAMPLE_ID
from shards.reader import Dataset
from shards.records import JsonRecord

log = logging.getLogger("actlake.probe")
CONFIG = ProbeConfig
SUMMARY, RESULTS, PLOT, DIRECTIONS = "summary.json", "probe_results.parquet", "probe_accuracy.png", \
    "directions.safetensors"


@dataclass(kw_only=True)
class HookOutcome(JsonRecord):
    """One hook's results (``OUT/hooks/HOOK.json``; its tensors beside it in ``HOOK.safetensors``)."""

    hook: str
    layer_index: int
    rows: list[dict]  #: one per fold: the columns of probe_results.parquet
    reg: float
    solver: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(kw_only=True)
class ProbeSummary(RunSummary, JsonRecord):
    """``summary.json``."""

    label: str
    task: str
    classes: list[str]
    hooks: dict[str, dict]
    concept_depth: dict
    rows_used: int
    seed: int
    metric: str = "accuracy"
    probe: str = "logistic"
    reg_units: str = "1/C"
    items: int = 0
    folds: int = 5
    group_by: str = EXAMPLE_ID
    control: str = "none"
    pool: str = "none"
    notes: list[str] = field(default_factory=list)
    out: str = ""


def _rows(hook: str, plan: ProbePlan, metric: str, fits: list[Fit], res: FitResult) -> list[dict]:
    counts = np.bincount(plan.fold, minlength=plan.folds)
    control = {f.fold: float(s) for f, s in zip(fits, res.scores, strict=True) if f.role == "control"}
    return [{"hook": hook, "layer_index": layer_index(hook), "fold": f.fold,
             "n_train": int(counts[list(f.train_folds)].sum()), "n_test": int(counts[f.fold]), "metric": metric,
             "value": float(s), "control_value": control.get(f.fold), "reg": float(f.reg)}
            for f, s in zip(fits, res.scores, strict=True) if f.role == "fold"]


def probe_hook(task: HookTask[ProbeConfig, ProbeRun], hook: str) -> HookOutcome:
    """Probe one hook of the pinned dataset; its tensors go to ``OUT/hooks/HOOK.safetensors``."""
    from safetensors.torch import save

    cfg, plan = task.cfg, task.plan.targets
    kind = get_probe(task.plan.kind)
    threads = hook_threads(cfg.threads, cfg.workers, cfg.address, plan.n_items * task.ds.hook_spec(hook).numel)
    if threads:
        torch.set_num_threads(threads)  # the runner puts its own count back after the hooks
    feats = load_features(task.ds, hook, plan, cfg.budget_bytes)
    done = fit_hook(cfg, plan, kind, feats)
    fits, res, final_reg = done.fits, done.result, done.final_reg
    rows = _rows(hook, plan, kind.metric, fits, res)
    final = next(i for i, f in enumerate(fits) if f.role == "final")
    tensors = {f"{hook}/probe": res.weights[final].contiguous(), f"{hook}/probe_bias": res.bias[final].contiguous()}
    if plan.task == "classify":
        for c, vec in zip(plan.classes, diff_in_means(feats, plan.y, plan.n_classes), strict=True):
            tensors[f"{hook}/diffmean/{c}"] = vec.contiguous()
    task.out.storage.put_bytes(f"{hook}.safetensors", save(tensors, metadata={"hook": hook}))
    log.info("%s: %s %.4f over %d folds", hook, kind.metric, np.mean([r["value"] for r in rows]), plan.folds)
    solver = {**res.notes, "threads": torch.get_num_threads(), **({"search": done.search} if done.search else {})}
    return HookOutcome(hook=hook, layer_index=layer_index(hook), rows=rows, reg=float(final_reg), solver=solver)


def _kind(cfg: ProbeConfig, plan: ProbePlan) -> ProbeKind:
    kind = probe_for_task(plan.task) if cfg.probe == "auto" else get_probe(cfg.probe)
    if plan.task not in kind.tasks:
        other = probe_for_task(plan.task).name
        raise ProbeInputError(f"--probe {kind.name} does not {plan.task}; use --probe {other} (or --task)")
    return kind


def _plan(cfg: ProbeConfig, ds: Dataset, hooks: list[str]) -> ProbeRun:
    plan = plan_probe(cfg, ds, min((ds.hook_spec(h).numel for h in hooks), default=None))
    return ProbeRun(plan, _kind(cfg, plan).name)


def _describe(cfg: ProbeConfig, run: ProbeRun, ds: Dataset, hooks: list[str]) -> str:
    plan = run.targets
    return (f"{plan.n_items} items ({len(plan.rows)} rows of version {ds.version}) in {plan.folds} folds by "
            f"{cfg.group_column(ds.columns)}; probe {run.kind}; hooks {', '.join(hooks)}")


def _results_table(hooks: list[str], outcomes: dict[str, HookOutcome]) -> pa.Table:
    rows = [r for h in hooks for r in outcomes[h].rows]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("hook", pa.string()), ("layer_index", pa.int32()), ("fold", pa.int32()), ("n_train", pa.int64()),
        ("n_test", pa.int64()), ("metric", pa.string()), ("value", pa.float64()), ("control_value", pa.float64()),
        ("reg", pa.float64())]))


def _control_notes(cfg: ProbeConfig, summaries: dict[str, HookSummary]) -> list[str]:
    """A note where the control scored at least the label at every hook: selectivity then says the probe
    memorises the control, not that no layer encodes the label."""
    if cfg.control == "none" or not summaries or any(s.selectivity is None or s.selectivity > 0
                                                     for s in summaries.values()):
        return []
    worst = min(s.control_mean for s in summaries.values())
    why = ("it measures what the probe can memorise of token identity, not where the label is encoded"
           if cfg.control == "type" else "no hook tells the label better than its control")
    note = (f"--control {cfg.control} scored at least the label at every hook (control mean >= {worst:.3f}): "
            f"selectivity <= 0 everywhere; {why}")
    log.warning("%s", note)
    return [note]


def _assemble(run: Assembly[ProbeConfig, ProbeRun], outcomes: dict[str, HookOutcome]) -> ProbeSummary:
    """The run's tables, plot and directions from every hook's results."""
    from safetensors.torch import load, save

    cfg, plan, kind, ds, hooks, out = run.cfg, run.plan.targets, get_probe(run.plan.kind), run.ds, run.hooks, run.out
    out.table(RESULTS, _results_table(hooks, outcomes))
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
    return ProbeSummary(
        label=plan.label, task=plan.task, classes=plan.classes, hooks={h: s.to_json() for h, s in summaries.items()},
        concept_depth=depth.to_json(), **run.recorded, rows_used=int(len(plan.rows)), seed=cfg.seed,
        metric=kind.metric, probe=kind.name, reg_units=kind.reg_name, items=plan.n_items, folds=plan.folds,
        group_by=cfg.group_column(ds.columns), control=cfg.control, pool=plan.pool,
        notes=plan.notes + _control_notes(cfg, summaries), out=out.display())


PROBE = HookAnalysis(name="probe", command="probe", neutral=RUN_NEUTRAL, plan=_plan, hook=probe_hook,
                     outcome=HookOutcome, assemble=_assemble, summary=ProbeSummary, describe=_describe, verb="probed",
                     estimate=estimate_hook)


def run(cfg: ProbeConfig) -> ProbeSummary:
    """Probe ``cfg.label`` over ``cfg.hooks`` (or resume a killed run); returns what ``summary.json`` holds.

    Example::

        run(ProbeConfig(data="demo-data/minilm", hooks=["embed", "resid.*"], label="label", control="shuffle",
                        out="runs/probe-concepts"))
    """
    return run_hook_analysis(PROBE, cfg)


probe = run

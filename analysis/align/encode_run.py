"""``actlake align encode``: voxelwise ridge encoding models from every hook to every response column, one
task per hook (``ridge.ridge_cv``); a killed run rerun skips finished hooks."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.align.config import EncodeConfig
from analysis.align.features import StimulusPlan, load_items, plan_stimuli
from analysis.align.inputs import Responses, read_responses
from analysis.align.ridge import ridge_cv
from analysis.align.sweep import is_pattern, sweep_brain
from analysis.common.args import TASK_NEUTRAL
from analysis.common.hooks import layer_index
from analysis.common.inputs import RunSummary
from analysis.common.perhook import HOOKS, Assembly, HookAnalysis, HookTask, run_hook_analysis
from analysis.common.plots import pyplot
from analysis.common.results import Results
from analysis.common.tables import read_table
from shards.errors import ConfigError
from shards.reader import Dataset
from shards.records import JsonRecord

log = logging.getLogger("actlake.align")
CONFIG = EncodeConfig


@dataclass(kw_only=True)
class EncodePlan:
    """What every hook's task fits: the stimuli, the responses in their order and the targets' ceilings."""

    stimuli: StimulusPlan
    y: np.ndarray  #: stimuli (plan order) × targets, float32
    targets: list[str]
    ceilings: np.ndarray | None


@dataclass(kw_only=True)
class HookFit(JsonRecord):
    """One hook's outcome (``OUT/hooks/HOOK.json``; the per-target table beside it in ``HOOK.parquet``)."""

    hook: str
    mean_r: float
    seconds: float = 0.0


def plan_encode(cfg: EncodeConfig, ds: Dataset, hooks: list[str] | None = None) -> EncodePlan:
    resp: Responses = read_responses(cfg.responses, cfg.storage)
    if not np.isfinite(resp.values).all():
        raise ConfigError(f"{cfg.responses}: {int((~np.isfinite(resp.values)).sum())} response values are NaN or "
                          "infinite; remove or impute them first")
    sp = plan_stimuli(ds, cfg.key, cfg.pool, resp.ids, cfg.intersect, f"--responses {cfg.responses}")
    index = {s: i for i, s in enumerate(resp.ids)}
    y = resp.values[[index[s] for s in sp.ids]]
    if len(sp.ids) < 2 * cfg.folds:
        raise ConfigError(f"{len(sp.ids)} stimuli are too few for --folds {cfg.folds}")
    ceilings = None
    if cfg.ceilings:
        t = read_table(cfg.ceilings, cfg.storage)
        if not {"target", "ceiling"} <= set(t.column_names):
            raise ConfigError(f"--ceilings {cfg.ceilings}: needs columns target and ceiling")
        c = dict(zip(map(str, t.column("target").to_pylist()), t.column("ceiling").to_pylist(), strict=True))
        missing = [tg for tg in resp.targets if tg not in c]
        if missing:
            raise ConfigError(f"--ceilings lacks {len(missing)} targets, e.g. {missing[:5]}")
        ceilings = np.array([c[tg] for tg in resp.targets], dtype=np.float64)
    return EncodePlan(stimuli=sp, y=y, targets=resp.targets, ceilings=ceilings)


def encode_hook(task: HookTask[EncodeConfig, EncodePlan], hook: str) -> HookFit:
    """Ridge models from one hook of the pinned dataset to every target; their table in ``OUT/hooks/HOOK.parquet``."""
    cfg, plan = task.cfg, task.plan
    x = load_items(task.ds, hook, plan.stimuli, cfg.batch_size)
    res = ridge_cv(x, plan.y, cfg.alphas, cfg.folds, cfg.inner_folds, True, cfg.alpha_score, cfg.target_batch,
                   progress=lambda f, n: log.info("%s: outer fold %d/%d", hook, f, n))
    n = len(plan.targets)
    cols = {"hook": [hook] * n, "layer_index": [layer_index(hook)] * n, "target": plan.targets,
            "subject": [None] * n, "method": ["ridge_r"] * n, "score": res.r, "r2": res.r2,
            "alpha_median": np.median(res.alphas, axis=0)}
    if plan.ceilings is not None:
        cols["noise_ceiling_high"] = plan.ceilings
        cols["score_normalized"] = res.r / np.where(plan.ceilings > 0, plan.ceilings, np.nan)
    task.out.table(f"{hook}.parquet", pa.table(cols))
    log.info("%s: mean r %.4f over %d targets", hook, float(np.mean(res.r)), n)
    return HookFit(hook=hook, mean_r=float(np.mean(res.r)))


@dataclass(kw_only=True)
class EncodeSummary(RunSummary, JsonRecord):
    hooks: list[str]
    n_stimuli: int
    n_targets: int
    folds: int
    inner_folds: int
    alphas: list[float]
    alpha_score: str
    per_hook: dict
    conventions: str
    out: str = ""


def _plot(out: Results, hooks: list[str], table: pa.Table) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(hooks) + 3), 4))
    r = {h: np.asarray(table.filter(pa.compute.equal(table["hook"], h))["score"]) for h in hooks}
    x = np.arange(len(hooks))
    ax.plot(x, [np.mean(r[h]) for h in hooks], "o-", label="mean over targets")
    ax.plot(x, [np.quantile(r[h], 0.9) for h in hooks], "s--", label="90th percentile")
    ax.set_xticks(x, hooks, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("held-out Pearson r")
    ax.set_title("Encoding models by layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.figure("encoding_by_layer.png", fig)


CONVENTIONS = ("ridge with intercept (features and targets centred on each training set); alpha per target by inner "
               "KFold (scikit-learn RidgeCV/GridSearchCV with r2, himalaya RidgeCV with neg_mse); score: Pearson r "
               "and R² of out-of-fold predictions")


def _describe(cfg: EncodeConfig, plan: EncodePlan, ds: Dataset, hooks: list[str]) -> str:
    return (f"ridge encoding of {len(plan.targets)} targets from {', '.join(hooks)} (version {ds.version}) over "
            f"{len(plan.stimuli.ids)} stimuli")


def _assemble(run: Assembly[EncodeConfig, EncodePlan], fits: dict[str, HookFit]) -> EncodeSummary:
    cfg, out, hooks = run.cfg, run.out, run.hooks
    table = pa.concat_tables([pq.read_table(io.BytesIO(out.storage.get_bytes(f"{HOOKS}/{h}.parquet")))
                              for h in hooks])
    out.table("results.parquet", table)
    _plot(out, hooks, table)
    per_hook = {}
    for h in hooks:
        r = np.asarray(table.filter(pa.compute.equal(table["hook"], h))["score"])
        per_hook[h] = {"mean_r": float(r.mean()), "median_r": float(np.median(r)), "max_r": float(r.max())}
    return EncodeSummary(**run.recorded, hooks=hooks, n_stimuli=len(run.plan.stimuli.ids),
                         n_targets=len(run.plan.targets), folds=cfg.folds, inner_folds=cfg.inner_folds,
                         alphas=list(cfg.alphas), alpha_score=cfg.alpha_score, per_hook=per_hook,
                         conventions=CONVENTIONS, out=out.display())


ENCODE = HookAnalysis(name="align", command="align encode", neutral=TASK_NEUTRAL | {"batch_size", "target_batch"},
                      plan=plan_encode, hook=encode_hook, outcome=HookFit, assemble=_assemble, summary=EncodeSummary,
                      seeds=lambda cfg: {}, describe=_describe)


def run(cfg: EncodeConfig) -> EncodeSummary:
    """Encoding models of ``cfg.responses`` from every hook; returns what ``summary.json`` holds. A pattern in
    ``--data`` (``zoo/*``) runs every matching dataset and compares them (``sweep.py``)."""
    if is_pattern(cfg.data):
        return sweep_brain(cfg, run, "align encode", ())
    return run_hook_analysis(ENCODE, cfg)

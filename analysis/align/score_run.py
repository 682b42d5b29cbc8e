"""``actlake align score``: Brain-Score-style neural predictivity of every hook (``regression_score.py``): the
responses' repetitions read and joined to the dataset's stimuli by id, the split-half ceiling once, then one
task per hook (the cross-validated score on all stimuli and on each commitment half); the assembly commits the
layer chosen on one half and reports its score on the other."""

from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.align.config import ScoreConfig
from analysis.align.features import StimulusPlan, load_items, plan_stimuli
from analysis.align.regression_score import commit_halves, internal_consistency, regression_score
from analysis.align.sweep import is_pattern, sweep_brain
from analysis.common.args import TASK_NEUTRAL
from analysis.common.hooks import layer_index
from analysis.common.inputs import RunSummary
from analysis.common.perhook import Assembly, HookAnalysis, HookTask, run_hook_analysis
from analysis.common.plots import pyplot
from analysis.common.tables import read_table
from shards.columns import STIMULUS_ID
from shards.errors import ConfigError
from shards.reader import Dataset
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.align")
CONFIG = ScoreConfig


@dataclass
class NeuralResponses:
    """repetitions × stimuli × neuroids (NaN: a repetition not recorded), with the stimulus ids and neuroids."""

    ids: list[str]
    neuroids: list[str]
    reps: np.ndarray


def read_neural(uri: str, storage) -> NeuralResponses:
    """A response table with repetitions as a column (long: one row per stimulus and repetition) or an axis."""
    if posixpath.splitext(uri)[1].lower() == ".npz":
        st, name = Storage.for_file(uri, storage)
        with np.load(io.BytesIO(st.get_bytes(name)), allow_pickle=False) as z:
            if "responses" not in z.files or STIMULUS_ID not in z.files:
                raise ConfigError(f"{uri}: an NPZ needs 'responses' (repetitions x stimuli x neuroids) and "
                                  f"'stimulus_id'; it has {z.files}")
            r = np.asarray(z["responses"], dtype=np.float64)
            r = r[None] if r.ndim == 2 else r
            names = [str(n) for n in z["neuroids"]] if "neuroids" in z.files else [str(i) for i in range(r.shape[2])]
            return NeuralResponses([str(s) for s in z[STIMULUS_ID]], names, r)
    t = read_table(uri, storage).to_pandas()
    if STIMULUS_ID not in t.columns:
        raise ConfigError(f"{uri}: no stimulus_id column (columns: {list(t.columns)[:10]})")
    neuroids = [c for c in t.columns if c not in (STIMULUS_ID, "repetition")]
    bad = [c for c in neuroids if not pd.api.types.is_numeric_dtype(t[c])]
    if bad or not neuroids:
        raise ConfigError(f"{uri}: every column but stimulus_id and repetition must be a neuroid's numbers "
                          f"({bad[:5] or 'none given'})")
    t[STIMULUS_ID] = t[STIMULUS_ID].astype(str)
    if "repetition" not in t.columns:
        t["repetition"] = t.groupby(STIMULUS_ID).cumcount()
    if t.duplicated([STIMULUS_ID, "repetition"]).any():
        raise ConfigError(f"{uri}: a (stimulus_id, repetition) pair appears twice")
    ids, reps = list(dict.fromkeys(t.stimulus_id)), sorted(t.repetition.unique())
    cube = np.full((len(reps), len(ids), len(neuroids)), np.nan)
    si, ri = {s: i for i, s in enumerate(ids)}, {r: i for i, r in enumerate(reps)}
    cube[t.repetition.map(ri).to_numpy(), t.stimulus_id.map(si).to_numpy()] = t[neuroids].to_numpy(np.float64)
    return NeuralResponses(ids, neuroids, cube)


@dataclass(kw_only=True)
class ScorePlan:
    stimuli: StimulusPlan
    y: np.ndarray  #: stimuli (plan order) × neuroids: the mean over the recorded repetitions
    reps: np.ndarray  #: repetitions × stimuli (plan order) × neuroids
    ceiling: dict
    dropped: int  #: response values that were NaN (missing repetitions), left out of the means and the ceiling
    halves: tuple[list[int], list[int]]


def plan_score(cfg: ScoreConfig, ds: Dataset, hooks: list[str] | None = None) -> ScorePlan:
    resp = read_neural(cfg.responses, cfg.storage)
    # sorted by id, as Brain-Score's alignment sorts the stimuli before its splits: the same splits, whatever the
    # order of the table or the dataset
    sp = plan_stimuli(ds, cfg.key, cfg.pool, sorted(resp.ids), cfg.intersect, f"--responses {cfg.responses}")
    index = {s: i for i, s in enumerate(resp.ids)}
    reps = resp.reps[:, [index[s] for s in sp.ids]]  # joined by id, in the dataset's stimulus order
    dropped = int(np.isnan(reps).sum())
    with np.errstate(invalid="ignore"):
        y = np.nanmean(reps, axis=0)
    if not np.isfinite(y).all():
        raise ConfigError(f"--responses {cfg.responses}: some stimulus has no recorded repetition for a neuroid "
                          f"({int((~np.isfinite(y)).sum())} values); drop those stimuli or neuroids")
    if dropped:
        log.warning("--responses: %d missing (NaN) response values left out of the means and the ceiling", dropped)
    if len(sp.ids) < 10:
        raise ConfigError(f"{len(sp.ids)} stimuli are too few for a cross-validated score")
    ceiling = internal_consistency(reps, cfg.splits, cfg.seed) if len(reps) >= 2 else None
    a, b = commit_halves(len(sp.ids), cfg.seed)
    return ScorePlan(stimuli=sp, y=y, reps=reps, dropped=dropped, halves=(a.tolist(), b.tolist()),
                     ceiling={"center": ceiling.center, "error": ceiling.error} if ceiling else {})


@dataclass(kw_only=True)
class HookScore(JsonRecord):
    hook: str
    score: float
    error: float
    selection: float | None = None  #: the score on the commitment half the layer is chosen on
    evaluation: float | None = None  #: ... and on the other half


def score_hook(task: HookTask[ScoreConfig, ScorePlan], hook: str) -> HookScore:
    cfg, plan = task.cfg, task.plan
    x = load_items(task.ds, hook, plan.stimuli, cfg.batch_size).reshape(len(plan.y), -1)
    kw = dict(kind=cfg.regression, splits=cfg.splits, train_size=cfg.train_size, pls_components=cfg.pls_components,
              ridge_alpha=cfg.ridge_alpha, seed=cfg.seed)
    s = regression_score(x, plan.y, **kw)
    out = HookScore(hook=hook, score=s.center, error=s.error)
    if cfg.commit:
        a, b = (np.asarray(h) for h in plan.halves)
        out.selection = regression_score(x[a], plan.y[a], **kw).center
        out.evaluation = regression_score(x[b], plan.y[b], **kw).center
    log.info("%s: %s score %.4f +- %.4f", hook, cfg.regression, s.center, s.error)
    return out


@dataclass(kw_only=True)
class ScoreSummary(RunSummary, JsonRecord):
    hooks: list[str]
    n_stimuli: int
    n_neuroids: int
    repetitions: int
    dropped_values: int
    regression: str
    ceiling: dict
    per_hook: dict
    committed: dict
    conventions: str
    out: str = ""


CONVENTIONS = ("Brain-Score (brain-score/vision metrics/regression_correlation, internal_consistency): ShuffleSplit "
               "of stimuli (10 splits, train 0.9, random_state 1, no stratification), PLS(25, scale=False) or "
               "Ridge(alpha=1), per-neuroid held-out Pearson r, median over neuroids, mean over splits; ceiling: "
               "split-half over repetitions, Spearman-Brown corrected, median, mean over splits; ceiled = "
               "score / ceiling; layer committed on one random half of the stimuli, scored on the other")


def _assemble(run: Assembly[ScoreConfig, ScorePlan], scores: dict[str, HookScore]) -> ScoreSummary:
    cfg, plan, hooks = run.cfg, run.plan, run.hooks
    ceil = plan.ceiling.get("center")
    rows = [{"hook": h, "layer_index": layer_index(h), "method": f"{cfg.regression}_pearson", "score": scores[h].score,
             "error": scores[h].error, "ceiling": ceil, "ceiled": scores[h].score / ceil if ceil else None,
             "selection": scores[h].selection, "evaluation": scores[h].evaluation} for h in hooks]
    run.out.table("results.parquet", pa.Table.from_pylist(rows))
    committed = {}
    if cfg.commit:
        best = max(hooks, key=lambda h: scores[h].selection)
        committed = {"hook": best, "selection": scores[best].selection, "score": scores[best].evaluation,
                     "ceiled": scores[best].evaluation / ceil if ceil else None}
    _plot(run, rows, committed, ceil)
    return ScoreSummary(**run.recorded, hooks=hooks, n_stimuli=len(plan.y),
                        n_neuroids=plan.y.shape[1], repetitions=len(plan.reps), dropped_values=plan.dropped,
                        regression=cfg.regression, ceiling=plan.ceiling,
                        per_hook={r["hook"]: {k: r[k] for k in ("score", "error", "ceiled")} for r in rows},
                        committed=committed, conventions=CONVENTIONS, out=run.out.display())


def _plot(run, rows: list[dict], committed: dict, ceil: float | None) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 3), 4))
    x = np.arange(len(rows))
    ax.errorbar(x, [r["score"] for r in rows], yerr=[r["error"] for r in rows], fmt="o-", label="score (10 splits)")
    if ceil:
        ax.axhline(ceil, color="0.5", ls="--", label=f"ceiling {ceil:.3f}")
    if committed:
        i = [r["hook"] for r in rows].index(committed["hook"])
        ax.plot([i], [committed["score"]], "r*", ms=14, label="committed layer (held-out half)")
    ax.set_xticks(x, [r["hook"] for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("median held-out Pearson r")
    ax.set_title("Neural predictivity by layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    run.out.figure("score_by_layer.png", fig)


SCORE = HookAnalysis(name="align", command="align score", neutral=TASK_NEUTRAL | {"batch_size"}, plan=plan_score,
                     hook=score_hook, outcome=HookScore, assemble=_assemble, summary=ScoreSummary,
                     seeds=lambda cfg: {"seed": cfg.seed})


def run(cfg: ScoreConfig) -> ScoreSummary:
    """Brain-Score-style scores of ``cfg.hooks`` against ``cfg.responses``; a pattern in ``--data`` sweeps."""
    if is_pattern(cfg.data):
        return sweep_brain(cfg, run, "align score", ())
    return run_hook_analysis(SCORE, cfg)

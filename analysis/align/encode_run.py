"""``actlake align encode``: voxelwise ridge encoding models from every hook to every response column, one
task per hook (``ridge.ridge_cv``); a killed run rerun skips finished hooks."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.align.config import EncodeConfig
from analysis.align.features import StimulusPlan, load_items, plan_stimuli
from analysis.align.inputs import Responses, read_responses
from analysis.align.ridge import ridge_cv
from analysis.common.args import TASK_NEUTRAL
from analysis.common.fanout import run_pending_hooks
from analysis.common.hooks import layer_index
from analysis.common.plots import pyplot
from analysis.common.results import Results
from analysis.common.rundir import RUN, RunDir, RunRecord, fingerprint_of, output_lock, run_settings
from analysis.common.tables import read_table
from shards.errors import ConfigError
from shards.reader import open_dataset
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.align")
CONFIG = EncodeConfig
SUMMARY, HOOKS = "summary.json", "hooks"


@dataclass
class EncodeJob:
    cfg: EncodeConfig
    stimuli: StimulusPlan
    y: np.ndarray  #: stimuli (plan order) × targets, float32
    targets: list[str]
    ceilings: np.ndarray | None


def plan_encode(cfg: EncodeConfig, ds) -> EncodeJob:
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
    return EncodeJob(cfg, sp, y, resp.targets, ceilings)


def encode_hook(job: EncodeJob, hook: str) -> dict:
    t0 = time.perf_counter()
    cfg = job.cfg
    ds = open_dataset(cfg.data, cfg.storage)
    x = load_items(ds, hook, job.stimuli, cfg.batch_size)
    res = ridge_cv(x, job.y, cfg.alphas, cfg.folds, cfg.inner_folds, True, cfg.alpha_score, cfg.target_batch,
                   progress=lambda f, n: log.info("%s: outer fold %d/%d", hook, f, n))
    cols = {"hook": [hook] * len(job.targets), "layer_index": [layer_index(hook)] * len(job.targets),
            "target": job.targets, "subject": [None] * len(job.targets), "method": ["ridge_r"] * len(job.targets),
            "score": res.r, "r2": res.r2, "alpha_median": np.median(res.alphas, axis=0)}
    if job.ceilings is not None:
        cols["noise_ceiling_high"] = job.ceilings
        cols["score_normalized"] = res.r / np.where(job.ceilings > 0, job.ceilings, np.nan)
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    out = Results(cfg.out, cfg.storage).child(HOOKS)
    out.storage.put_bytes(f"{hook}.parquet", buf.getvalue())
    log.info("%s: mean r %.4f over %d targets in %.1fs", hook, float(np.mean(res.r)), len(job.targets),
             time.perf_counter() - t0)
    return {"hook": hook, "mean_r": float(np.mean(res.r))}


@dataclass
class EncodeSummary(JsonRecord):
    dataset: str
    dataset_id: str
    dataset_version: int
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


def _encode(cfg: EncodeConfig) -> EncodeSummary:
    ds, hooks = cfg.open()
    out = Results(cfg.out, cfg.storage)
    settings = run_settings(cfg, TASK_NEUTRAL | {"batch_size", "target_batch"}, dataset_id=ds.dataset_id,
                            dataset_version=ds.version, hooks=hooks)
    rundir = RunDir(out.storage, SUMMARY, resume_marker=RUN)
    state = rundir.state(settings, cfg.overwrite)
    if state == "done":
        return EncodeSummary.from_json(rundir.summary())
    job = plan_encode(cfg, ds)
    if state == "new":
        rundir.start(RunRecord(fingerprint_of(settings), settings, dataclasses.asdict(cfg),
                               ds.manifest.ref(ds.storage.display(), hooks), {}))
    log.info("ridge encoding of %d targets from %s over %d stimuli", len(job.targets), ", ".join(hooks),
             len(job.stimuli.ids))
    run_pending_hooks(partial(encode_hook, job), hooks, lambda h: out.storage.exists(f"{HOOKS}/{h}.parquet"),
                      workers=cfg.workers, address=cfg.address, threads=cfg.threads, logger=log)
    table = pa.concat_tables([pq.read_table(io.BytesIO(out.storage.get_bytes(f"{HOOKS}/{h}.parquet")))
                              for h in hooks])
    out.table("results.parquet", table)
    _plot(out, hooks, table)
    per_hook = {}
    for h in hooks:
        r = np.asarray(table.filter(pa.compute.equal(table["hook"], h))["score"])
        per_hook[h] = {"mean_r": float(r.mean()), "median_r": float(np.median(r)), "max_r": float(r.max())}
    summary = EncodeSummary(ds.storage.display(), ds.dataset_id, ds.version, hooks, len(job.stimuli.ids),
                            len(job.targets), cfg.folds, cfg.inner_folds, list(cfg.alphas), cfg.alpha_score,
                            per_hook, "ridge with intercept (features and targets centred on each training set); "
                            "alpha per target by inner KFold (scikit-learn RidgeCV/GridSearchCV with r2, "
                            "himalaya RidgeCV with neg_mse); score: Pearson r and R² of out-of-fold predictions",
                            out.display())
    rundir.finish(summary.to_json())
    return summary


def run(cfg: EncodeConfig) -> EncodeSummary:
    """Encoding models of ``cfg.responses`` from every hook; returns what ``summary.json`` holds."""
    with output_lock(Storage(cfg.out, cfg.storage), "align output"):
        return _encode(cfg)

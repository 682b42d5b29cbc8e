"""``actlake align banded``: banded ridge from two or more hooks (bands) to the responses (``banded.py``), held
out by outer folds: each band's share of the R² (product measure) and, for two or three bands, the unique and
shared variance from the joint models of every subset."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sklearn.model_selection import KFold

from analysis.align.banded import banded_ridge, partition, r2_split, simplex_grid
from analysis.align.config import BandedConfig
from analysis.align.features import load_items, plan_stimuli
from analysis.align.inputs import read_responses
from analysis.common.args import TASK_NEUTRAL
from analysis.common.inputs import DatasetInput, RunSummary
from analysis.common.plots import pyplot
from analysis.common.runstart import RunKind, StartedRun, run_start
from shards.errors import ConfigError
from shards.records import JsonRecord

log = logging.getLogger("actlake.align")
CONFIG = BandedConfig


@dataclass(kw_only=True)
class BandedSummary(RunSummary, JsonRecord):
    """``summary.json``: ``inputs`` holds each ``--bands-from`` dataset read (``bands_from[i]``)."""

    bands: list[str]
    n_stimuli: int
    n_targets: int
    r2_joint: float  #: mean over targets of the held-out R² of all bands together
    r2_split: dict  #: per band, mean over targets of its share
    partition: dict  #: unique / shared parts, mean over targets (two or three bands)
    conventions: str
    seconds: float
    out: str = ""


CONVENTIONS = ("himalaya BandedRidgeCV (random_search over an explicit simplex grid of band weights x --alphas, "
               "inner KFold, negative MSE, per target), outer KFold by stimulus with features and responses centred "
               "on each training set; R2 split by the product measure (himalaya r2_score_split); variance "
               "partitioning from the joint model of every subset of bands")


def _held_out(xs: list[np.ndarray], y: np.ndarray, cfg: BandedConfig) -> tuple[np.ndarray, np.ndarray]:
    """(bands, targets) held-out R² shares and (targets,) joint R², averaged over the outer folds."""
    grid, shares, joint = simplex_grid(len(xs), cfg.steps), [], []
    for tr, te in KFold(n_splits=cfg.folds).split(y):
        means = [x[tr].mean(0) for x in xs]
        ym = y[tr].mean(0)
        fit = banded_ridge([x[tr] - m for x, m in zip(xs, means, strict=True)], y[tr] - ym, grid, cfg.alphas,
                           cfg.inner_folds)
        split = fit.predict_split([x[te] - m for x, m in zip(xs, means, strict=True)])
        yte = y[te] - ym
        shares.append(r2_split(yte, split))
        joint.append(1 - ((yte - split.sum(0)) ** 2).sum(0) / (yte ** 2).sum(0))
    return np.mean(shares, axis=0), np.mean(joint, axis=0)


def _band_name(spec: str) -> str:
    """``zoo/vit-random@v2#resid.1`` -> ``vit-random:resid.1``."""
    uri, hook = spec.rsplit("#", 1)
    return f"{DatasetInput(uri).uri.rstrip('/').rsplit('/', 1)[-1]}:{hook}"


def band_inputs(cfg: BandedConfig) -> dict[str, DatasetInput]:
    """Each ``--bands-from DATASET[@vN]#HOOK``'s dataset, an input of the run named ``bands_from[i]``."""
    return {f"bands_from[{i}]": DatasetInput(spec.rsplit("#", 1)[0]) for i, spec in enumerate(cfg.bands_from)}


KIND = RunKind("align banded", TASK_NEUTRAL | {"batch_size"}, lock="align output", resume_marker=None)


def run(cfg: BandedConfig) -> BandedSummary:
    """Banded ridge of ``cfg.hooks`` to ``cfg.responses``; a rerun of a finished run returns its summary."""
    with run_start(cfg, KIND, hooks=cfg.resolve_hooks, extra=band_inputs(cfg)) as started:
        return _run(cfg, started)


def _run(cfg: BandedConfig, run: StartedRun) -> BandedSummary:
    t0 = time.perf_counter()
    others = {spec: run.inputs[name] for spec, name in zip(cfg.bands_from, band_inputs(cfg), strict=True)}
    if run.state == "done":
        return BandedSummary.from_json(run.rundir.summary())
    resp = read_responses(cfg.responses, cfg.storage)
    sp = plan_stimuli(run.ds, cfg.key, cfg.pool, resp.ids, cfg.intersect, f"--responses {cfg.responses}")
    index = {s: i for i, s in enumerate(resp.ids)}
    y = resp.values[[index[s] for s in sp.ids]].astype(np.float64)
    plans = {spec: plan_stimuli(o, cfg.key, cfg.pool, sp.ids, False, f"--data {cfg.data}")
             for spec, o in others.items()}  # the other model's rows in this dataset's stimulus order
    bands = [*run.hooks, *(_band_name(s) for s in cfg.bands_from)]
    if len(bands) < 2:
        raise ConfigError(f"--hooks (and --bands-from) name the bands: give two or more (got {bands})")
    run.begin(cfg)
    xs = {h: load_items(run.ds, h, sp, cfg.batch_size).reshape(len(y), -1) for h in run.hooks}
    for spec, o in others.items():
        xs[_band_name(spec)] = load_items(o, spec.rsplit("#", 1)[1], plans[spec], cfg.batch_size).reshape(len(y), -1)
    shares, joint = _held_out(list(xs.values()), y, cfg)
    rows = [{"target": t, "band": b, "r2_split": float(shares[i, j]), "r2_joint": float(joint[j])}
            for j, t in enumerate(resp.targets) for i, b in enumerate(bands)]
    run.out.table("results.parquet", pa.Table.from_pylist(rows))
    parts = {}
    if len(bands) in (2, 3):
        subsets = {frozenset(s): s for r in range(1, len(bands)) for s in itertools.combinations(bands, r)}
        r2 = {k: _held_out([xs[h] for h in s], y, cfg)[1] for k, s in subsets.items()}
        r2[frozenset(bands)] = joint
        parts = partition(r2)
        run.out.table("partition.parquet", pa.Table.from_pylist([{"target": t, "part": p, "r2": float(v[j])}
                                                                 for p, v in parts.items()
                                                                 for j, t in enumerate(resp.targets)]))
    _plot(run.out, bands, shares, parts)
    summary = BandedSummary(
        **run.recorded(), bands=bands, n_stimuli=len(y), n_targets=y.shape[1], r2_joint=float(joint.mean()),
        r2_split={b: float(shares[i].mean()) for i, b in enumerate(bands)},
        partition={p: float(v.mean()) for p, v in parts.items()}, conventions=CONVENTIONS,
        seconds=round(time.perf_counter() - t0, 2), out=run.out.display())
    run.rundir.finish(summary.to_json())
    return summary


def _plot(out, bands: list[str], shares: np.ndarray, parts: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if parts else 1, figsize=(11 if parts else 5.5, 4), squeeze=False)
    ax = axes[0][0]
    ax.bar(bands, shares.mean(1))
    ax.set_ylabel("held-out R² share (mean over targets)")
    ax.set_title("banded ridge: each band's share")
    if parts:
        ax = axes[0][1]
        ax.barh(list(parts), [float(v.mean()) for v in parts.values()])
        ax.set_xlabel("R² (mean over targets)")
        ax.set_title("variance partitioning")
    fig.tight_layout()
    out.figure("banded.png", fig)

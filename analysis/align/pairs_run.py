"""``actlake align cka``: CKA (and shape distances) between every pair of hooks of one or two datasets.

Linear CKA streams: one pass over the matched rows accumulates the cross moments of every hook
(``moments.CrossMoments``, float64), from which every pair's biased or debiased CKA, angular and Procrustes
distance is exact, in memory independent of the number of rows. RBF CKA loads each hook's rows (``--max-rows``)
and builds N × N Gram matrices.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from analysis.align import metrics  # noqa: F401  (registers the metrics)
from analysis.align.config import CkaConfig
from analysis.align.metrics.cka import gram_cka, gram_rbf
from analysis.align.moments import CrossMoments
from analysis.align.pairs import HookPairs, load_matched, plan_pairs, stream_matched
from analysis.align.registry import get_metric
from analysis.align.report import write_pair_matrix
from analysis.common.args import TASK_NEUTRAL
from analysis.common.results import Results
from analysis.common.rundir import RunDir, RunRecord, fingerprint_of, output_lock, run_settings
from shards.progress import Progress
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.align")
CONFIG = CkaConfig
SUMMARY = "summary.json"


@dataclass
class PairSummary(JsonRecord):
    dataset: str
    dataset_id: str
    dataset2: str
    dataset2_id: str
    rows: int
    method: str
    pairs: list[dict]
    notes: list[str]
    seconds: float
    peak_state_bytes: int = 0
    out: str = ""


def _views(hp: HookPairs) -> list[tuple[str, str]]:
    views = [("1", h) for h in hp.views1]
    if not hp.same:
        views += [("2", h) for h in hp.views2]
    else:
        views += [("1", h) for h in hp.views2 if ("1", h) not in views]
    return views


def _side2(hp: HookPairs) -> str:
    return "1" if hp.same else "2"


def linear_rows(cfg: CkaConfig, hp: HookPairs) -> tuple[list[dict], int]:
    views = _views(hp)
    dims = [(hp.ds1 if s == "1" else hp.ds2).hook_spec(h).numel for s, h in views]
    acc = CrossMoments(dims)
    if hp.plans:
        acc.add([load_matched(hp, s, h, cfg.max_rows, cfg.batch_size) for s, h in views])
    else:
        with Progress(hp.n, "row", "rows", log) as progress:
            for batch in stream_matched(hp, views, cfg.batch_size):
                acc.add(batch)
                progress.update(len(batch[0]))
    rows = []
    method = f"linear_cka{'_debiased' if cfg.debiased else ''}"
    for a, b in hp.pairs:
        m = acc.pair(views.index(("1", a)), views.index((_side2(hp), b)))
        for name in cfg.metrics:
            metric = get_metric(name)
            value = metric.from_moments(m, debiased=cfg.debiased) if name == "cka" else metric.from_moments(m)
            rows.append({"hook": a, "hook2": b, "method": method if name == "cka" else name, "score": value,
                         "rows": m.n})
    return rows, acc.zz.nbytes + acc.qz.nbytes


def rbf_rows(cfg: CkaConfig, hp: HookPairs) -> tuple[list[dict], int]:
    grams: dict[tuple[str, str], np.ndarray] = {}

    def gram(side: str, hook: str) -> np.ndarray:
        if (side, hook) not in grams:
            grams[(side, hook)] = gram_rbf(load_matched(hp, side, hook, cfg.max_rows, cfg.batch_size),
                                           cfg.rbf_threshold)
        return grams[(side, hook)]

    rows = []
    for a, b in hp.pairs:
        ka, kb = gram("1", a), gram(_side2(hp), b)
        rows.append({"hook": a, "hook2": b, "method": f"rbf_cka{'_debiased' if cfg.debiased else ''}",
                     "score": gram_cka(ka, kb, cfg.debiased), "rows": len(ka)})
    return rows, sum(g.nbytes for g in grams.values())


def start_pair_run(cfg, neutral: frozenset[str]) -> tuple[HookPairs, Results, RunDir, PairSummary | None]:
    """Plan the pairs and open the output: (pairs, output, run dir, the finished summary if already done)."""
    hp = plan_pairs(cfg)
    out = Results(cfg.out, cfg.storage)
    settings = run_settings(cfg, TASK_NEUTRAL | neutral, dataset_id=hp.ds1.dataset_id,
                            dataset_version=hp.ds1.version, dataset2_id=hp.ds2.dataset_id)
    rundir = RunDir(out.storage, SUMMARY)
    if rundir.state(settings, cfg.overwrite) == "done":
        return hp, out, rundir, PairSummary.from_json(rundir.summary())
    rundir.start(RunRecord(fingerprint_of(settings), settings, dataclasses.asdict(cfg),
                           hp.ds1.manifest.ref(hp.ds1.storage.display(), hp.views1), {}))
    return hp, out, rundir, None


def _cka(cfg: CkaConfig) -> PairSummary:
    t0 = time.perf_counter()
    hp, out, rundir, done = start_pair_run(cfg, frozenset({"batch_size"}))
    if done:
        return done
    log.info("%s CKA of %d hook pairs over %d rows", cfg.kernel, len(hp.pairs), hp.n)
    rows, state_bytes = (linear_rows if cfg.kernel == "linear" else rbf_rows)(cfg, hp)
    out.table("results.parquet", pa.Table.from_pylist(rows))
    for name in {r["method"] for r in rows}:
        write_pair_matrix(out, f"{name}_matrix.png", rows, name, f"{name} ({rows[0]['rows']} rows)")
    summary = PairSummary(hp.ds1.storage.display(), hp.ds1.dataset_id, hp.ds2.storage.display(), hp.ds2.dataset_id,
                          hp.n, rows[0]["method"], rows, hp.notes or [], round(time.perf_counter() - t0, 3),
                          state_bytes, out.display())
    rundir.finish(summary.to_json())
    return summary


def run(cfg: CkaConfig) -> PairSummary:
    """CKA between hook pairs; returns what ``summary.json`` holds.

    Example::

        run(CkaConfig(data="demo-data/minilm", hooks=["resid.*"], debiased=True, out="runs/cka"))
    """
    with output_lock(Storage(cfg.out, cfg.storage), "align output"):
        return _cka(cfg)

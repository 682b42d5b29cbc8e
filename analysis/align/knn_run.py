"""``actlake align knn``: mutual k-nearest-neighbour alignment between hooks of one or two datasets. Each hook's
neighbour lists are computed once (blocked: memory O(N·k + block·N)) and shared by all its pairs."""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import torch

from analysis.align.config import KnnConfig
from analysis.align.metrics.knn import knn_overlap, nearest_neighbors
from analysis.align.pairs import load_matched
from analysis.align.pairs_run import PairSummary, start_pair_run
from analysis.align.report import write_pair_matrix
from analysis.common.rundir import output_lock
from shards.storage import Storage

log = logging.getLogger("actlake.align")
CONFIG = KnnConfig
SUMMARY = "summary.json"


def _knn(cfg: KnnConfig) -> PairSummary:
    t0 = time.perf_counter()
    hp, out, rundir, done = start_pair_run(cfg, frozenset({"batch_size", "block"}))
    if done:
        return done
    side2 = "1" if hp.same else "2"
    cache: dict[tuple[str, str], torch.Tensor] = {}

    def neighbours(side: str, hook: str) -> torch.Tensor:
        if (side, hook) not in cache:
            x = torch.from_numpy(load_matched(hp, side, hook, cfg.max_rows, cfg.batch_size))
            if not 0 < cfg.k < len(x):
                raise ValueError(f"--k must be between 1 and the number of rows - 1 ({len(x) - 1})")
            cache[(side, hook)] = nearest_neighbors(torch.nn.functional.normalize(x, dim=1), cfg.k, cfg.block)
            log.info("%s: neighbours of %d rows", hook, len(x))
        return cache[(side, hook)]

    rows = []
    for a, b in hp.pairs:
        na, nb = neighbours("1", a), neighbours(side2, b)
        rows.append({"hook": a, "hook2": b, "method": "mutual_knn", "score": knn_overlap(na, nb), "k": cfg.k,
                     "rows": len(na)})
    out.table("results.parquet", pa.Table.from_pylist(rows))
    write_pair_matrix(out, "mutual_knn_matrix.png", rows, "mutual_knn", f"mutual k-NN (k={cfg.k})")
    summary = PairSummary(hp.ds1.storage.display(), hp.ds1.dataset_id, hp.ds2.storage.display(), hp.ds2.dataset_id,
                          rows[0]["rows"], "mutual_knn", rows, hp.notes or [], round(time.perf_counter() - t0, 3),
                          sum(v.nbytes for v in cache.values()), out.display())
    rundir.finish(summary.to_json())
    return summary


def run(cfg: KnnConfig) -> PairSummary:
    """Mutual k-NN alignment between hook pairs; returns what ``summary.json`` holds."""
    with output_lock(Storage(cfg.out, cfg.storage), "align output"):
        return _knn(cfg)

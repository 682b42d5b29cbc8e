"""``actlake align cka`` and ``align knn``: alignment metrics between every pair of hooks of one or two datasets.

Each metric comes from the registry with its own options (``metrics/``) and runs one of two ways: streamed, from
the cross moments of every view accumulated in one pass over the matched rows (``moments.CrossMoments``,
float64: linear CKA biased or debiased, angular and Procrustes distances, exact in memory independent of the
number of rows); or in memory, each view prepared once (an RBF Gram matrix, k-NN neighbour lists; ``--max-rows``)
and shared by all its pairs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from analysis.align import metrics  # noqa: F401  (registers the metrics)
from analysis.align.config import CkaConfig, KnnConfig, PairArgs
from analysis.align.moments import CrossMoments
from analysis.align.null import MAX_ROWS, permutation_null, permutations
from analysis.align.pairs import HookPairs, load_matched, plan_pairs, second_dataset, stream_matched
from analysis.align.registry import AlignmentMetric, get_metric
from analysis.align.report import write_pair_matrix
from analysis.align.sweep import is_pattern, sweep_pairs
from analysis.common.args import TASK_NEUTRAL
from analysis.common.finite import require_finite
from analysis.common.inputs import RunSummary
from analysis.common.options import options_of
from analysis.common.runstart import RunKind, StartedRun, run_start
from shards.errors import ConfigError
from shards.progress import Progress
from shards.records import JsonRecord

log = logging.getLogger("actlake.align")
CONFIG = CkaConfig
SUMMARY = "summary.json"


@dataclass(kw_only=True)
class PairSummary(RunSummary, JsonRecord):
    """``summary.json``: ``dataset`` is --data; ``inputs["data2"]`` the second dataset, when there is one."""

    rows: int
    method: str
    pairs: list[dict]
    notes: list[str]
    seconds: float
    peak_state_bytes: int = 0
    out: str = ""


@dataclass
class Chosen:
    """A metric with its options as this run sets them."""

    metric: AlignmentMetric
    options: object

    @property
    def method(self) -> str:
        return self.metric.method_name(self.options)

    def row(self, a: str, b: str, score: float, rows: int) -> dict:
        """A result row; an undefined score (a hook with zero variance: NaN) is null, never stored as a number."""
        opts = dataclasses.asdict(self.options) if self.options is not None else {}
        return {"hook": a, "hook2": b, "method": self.method, "score": float(score) if math.isfinite(score) else None,
                "rows": rows, **opts}


def _views(hp: HookPairs) -> list[tuple[str, str]]:
    views = [("1", h) for h in hp.views1]
    if not hp.same:
        views += [("2", h) for h in hp.views2]
    else:
        views += [("1", h) for h in hp.views2 if ("1", h) not in views]
    return views


def _side2(hp: HookPairs) -> str:
    return "1" if hp.same else "2"


def streamed_scores(cfg: PairArgs, hp: HookPairs, chosen: list[Chosen]) -> tuple[dict, int]:
    """{(a, b, method): row} of the streamed metrics from one pass of cross moments; and the state's bytes."""
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
    out = {}
    for a, b in hp.pairs:
        m = acc.pair(views.index(("1", a)), views.index((_side2(hp), b)))
        for c in chosen:
            out[(a, b, c.method)] = c.row(a, b, c.metric.from_moments(m, c.options), m.n)
    return out, acc.zz.nbytes + acc.qz.nbytes


def in_memory_scores(cfg: PairArgs, hp: HookPairs, chosen: list[Chosen]) -> tuple[dict, int]:
    """{(a, b, method): row} of the metrics computed on rows in memory, each view prepared once; and the bytes
    the prepared views held."""
    prepared: dict[tuple[str, str, str], object] = {}

    def view(c: Chosen, side: str, hook: str):
        key = (side, hook, c.method)
        if key not in prepared:
            prepared[key] = c.metric.prepare(load_matched(hp, side, hook, cfg.max_rows, cfg.batch_size), c.options)
            log.info("%s: %s prepared", hook, c.method)
        return prepared[key]

    out = {}
    for a, b in hp.pairs:
        for c in chosen:
            va, vb = view(c, "1", a), view(c, _side2(hp), b)
            out[(a, b, c.method)] = c.row(a, b, c.metric.compare(va, vb, c.options), len(va))
    return out, sum(int(getattr(v, "nbytes", 0)) for v in prepared.values())


def pair_rows(cfg: PairArgs, hp: HookPairs) -> tuple[list[dict], int]:
    """Every pair's score under every metric of ``cfg`` (pair by pair, metrics in the order given)."""
    chosen = [Chosen(m, options_of(m.options, cfg)) for m in map(get_metric, cfg.metric_names())]
    streamed = [c for c in chosen if c.metric.runs_streamed(c.options)]
    memory = [c for c in chosen if not c.metric.runs_streamed(c.options)]
    scores, state = {}, 0
    for part, fn in ((streamed, streamed_scores), (memory, in_memory_scores)):
        if part:
            got, nbytes = fn(cfg, hp, part)
            scores.update(got)
            state += nbytes
    return [scores[(a, b, c.method)] for a, b in hp.pairs for c in chosen], state


def add_null(cfg: PairArgs, hp: HookPairs, rows: list[dict]) -> None:
    """Each row's permutation null (``null.py``): the pair's views in memory once, the same permutations for all."""
    chosen = {c.method: c for c in (Chosen(m, options_of(m.options, cfg)) for m in map(get_metric,
                                                                                      cfg.metric_names()))}
    views: dict[tuple[str, str], np.ndarray] = {}
    perms = None
    for row in rows:
        c = chosen[row["method"]]
        if c.metric.null is None:
            continue  # shape distances: no null (say so in the note)
        for key in (("1", row["hook"]), (_side2(hp), row["hook2"])):
            if key not in views:
                views[key] = load_matched(hp, *key, cfg.max_rows, cfg.batch_size)
        x, y = views[("1", row["hook"])], views[(_side2(hp), row["hook2"])]
        if perms is None:
            perms = permutations(len(x), cfg.permutations, cfg.seed)
        row.update(permutation_null(c.metric, x, y, perms, c.options).to_row())
        log.info("%s x %s: %s %.4f, null %.4f +- %.4f, p %.4g", row["hook"], row["hook2"], row["method"],
                 row["score"] or float("nan"), row["null_mean"], row["null_sd"], row["p_value"])


def _pairs(cfg: PairArgs, run: StartedRun) -> PairSummary:
    t0 = time.perf_counter()
    command = run.rundir.command
    ds2 = second_dataset(run.ds, run.inputs.get("data2"))
    if run.state == "done":
        log.info("%s already holds this finished run", run.out.display())
        return PairSummary.from_json(run.rundir.summary())
    hp = plan_pairs(cfg, run.ds, run.hooks, ds2)
    if cfg.permutations and min(hp.n, cfg.max_rows or hp.n) > MAX_ROWS:
        raise ConfigError(f"--permutations holds N x N Gram matrices; {hp.n} matched rows is more than {MAX_ROWS}: "
                          f"pass --max-rows {MAX_ROWS} (or --pool to compare stimuli, not rows)")
    require_finite(hp.ds1, hp.views1, command)
    require_finite(hp.ds2, hp.views2, command)
    run.begin(cfg)
    log.info("%s of %d hook pairs over %d rows", ", ".join(cfg.metric_names()), len(hp.pairs), hp.n)
    rows, state_bytes = pair_rows(cfg, hp)
    if cfg.permutations:
        add_null(cfg, hp, rows)
    run.out.table("results.parquet", pa.Table.from_pylist(rows))
    for name in dict.fromkeys(r["method"] for r in rows):
        n = next(r["rows"] for r in rows if r["method"] == name)
        write_pair_matrix(run.out, f"{name}_matrix.png", rows, name, f"{name} ({n} rows)")
    undefined = [f"{r['method']} of {r['hook']} and {r['hook2']} is undefined (a hook with zero variance): null"
                 for r in rows if r["score"] is None]
    for note in undefined:
        log.warning("%s", note)
    summary = PairSummary(
        **run.recorded(), rows=rows[0]["rows"], method=rows[0]["method"], pairs=rows,
        notes=[*(hp.notes or []), *undefined], seconds=round(time.perf_counter() - t0, 3), peak_state_bytes=state_bytes,
        out=run.out.display())
    run.rundir.finish(summary.to_json())
    return summary


def run_pairs(cfg: PairArgs) -> PairSummary:
    """Every metric of ``cfg`` between hook pairs, under the output's lock; returns what ``summary.json`` holds."""
    command = "align knn" if isinstance(cfg, KnnConfig) else "align cka"
    kind = RunKind(command, TASK_NEUTRAL | {"batch_size", "block"}, lock="align output", resume_marker=None)
    with run_start(cfg, kind, hooks=cfg.resolve_hooks) as run:
        return _pairs(cfg, run)


def run(cfg: CkaConfig) -> PairSummary:
    """CKA (and shape distances) between hook pairs; returns what ``summary.json`` holds.

    Example::

        run(CkaConfig(data="demo-data/minilm", hooks=["resid.*"], debiased=True, out="runs/cka"))

    A pattern in ``--data`` (``zoo/*``) compares every pair of matching datasets (``sweep.py``).
    """
    if is_pattern(cfg.data):
        return sweep_pairs(cfg, run, "align cka")
    return run_pairs(cfg)

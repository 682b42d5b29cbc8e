"""Two sets of hooks whose rows pair up: one dataset (identical rows), or two datasets matched by
``example_id``/``position`` or by stimulus (pooled); and reading them, streamed or in memory."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from analysis.align.features import MatchError, StimulusPlan, load_items, plan_stimuli
from analysis.common.join import join_rows
from shards.columns import EXAMPLE_ID, POSITION, STIMULUS_ID
from shards.reader import Dataset

log = logging.getLogger("actlake.align")


@dataclass(kw_only=True)
class HookPairs:
    """Views (dataset, hook) and the pairs of views to compare; rows of ``ds2`` in ``ds1``'s row order by
    ``rows2`` (None: the same rows), or both sides as pooled stimuli (``plans``)."""

    ds1: Dataset
    ds2: Dataset
    views1: list[str]
    views2: list[str]
    pairs: list[tuple[str, str]]
    same: bool
    rows1: np.ndarray | None  #: ds1 rows used (None: all)
    rows2: np.ndarray | None  #: for each used ds1 row, its ds2 row (None: identical)
    plans: tuple[StimulusPlan, StimulusPlan] | None = None
    notes: list[str] | None = None

    @property
    def n(self) -> int:
        if self.plans:
            return len(self.plans[0].ids)
        return self.ds1.num_rows if self.rows1 is None else len(self.rows1)


def _match_rows(cfg, ds1: Dataset, ds2: Dataset) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    keys = [EXAMPLE_ID, POSITION]
    left = ds1.metadata_table(keys)
    right = ds2.metadata_table(keys)
    if left.equals(right):
        return None, None, []
    idx = join_rows(left, right, keys)
    missing = int((idx < 0).sum())
    notes = []
    if missing:
        if not cfg.intersect:
            raise MatchError(f"{missing} of {len(idx)} rows of --data have no row with the same example_id and "
                             f"position in --data2 (e.g. example {left.column(EXAMPLE_ID)[int(np.argmax(idx < 0))]})."
                             " Extract both over the same corpus, or pass --intersect to use the common rows.")
        notes.append(f"--intersect: {missing} rows of --data without a match in --data2 were dropped")
    rows1 = np.flatnonzero(idx >= 0)
    return rows1, idx[rows1], notes


def second_dataset(ds1: Dataset, ds2: Dataset | None) -> Dataset:
    """The pinned ``--data2``, or ``ds1`` itself when there is no second dataset or it is ``ds1`` at the same
    version (then every pair of ``--hooks`` is compared once)."""
    if ds2 is None or (ds2.dataset_id, ds2.version, ds2.storage.uri) == (ds1.dataset_id, ds1.version, ds1.storage.uri):
        return ds1
    return ds2


def plan_pairs(cfg, ds1: Dataset, hooks1: list[str], ds2: Dataset) -> HookPairs:
    """Resolve the pairs and match rows of the two pinned datasets, before any hook is read."""
    same = ds2 is ds1
    hooks2 = ds2.schema.resolve_hooks(cfg.hooks2, ds2.storage.display()) if cfg.hooks2 else list(hooks1)
    if same and not cfg.hooks2:
        pairs = [(a, b) for i, a in enumerate(hooks1) for b in hooks1[i + 1:]]
        if not pairs:
            raise MatchError("one dataset and one hook: nothing to compare. Name several --hooks, or --data2/--hooks2")
    else:
        pairs = [(a, b) for a in hooks1 for b in hooks2]
    if cfg.pool != "none" or cfg.match == STIMULUS_ID:
        pool = cfg.pool if cfg.pool != "none" else "none"
        p1 = plan_stimuli(ds1, "auto" if cfg.key == "auto" else cfg.key, pool, None, False, "--data")
        p2 = p1 if same else plan_stimuli(ds2, cfg.key, pool, p1.ids, cfg.intersect, "--data")
        if not same and len(p2.ids) != len(p1.ids):
            p1 = plan_stimuli(ds1, cfg.key, pool, p2.ids, True, "--data2")
        return HookPairs(ds1=ds1, ds2=ds2, views1=hooks1, views2=hooks2, pairs=pairs, same=same, rows1=None,
                         rows2=None, plans=(p1, p2))
    rows1, rows2, notes = (None, None, []) if same else _match_rows(cfg, ds1, ds2)
    return HookPairs(ds1=ds1, ds2=ds2, views1=hooks1, views2=hooks2, pairs=pairs, same=same, rows1=rows1, rows2=rows2,
                     notes=notes)


def stream_matched(hp: HookPairs, views: list[tuple[str, str]], batch_size: int) -> Iterator[list[np.ndarray]]:
    """Batches of every view (side, hook) in ``ds1``'s row order, float64, rows matched."""
    h1 = [h for side, h in views if side == "1"]
    h2 = [h for side, h in views if side == "2"]
    rows1 = np.arange(hp.ds1.num_rows) if hp.rows1 is None else hp.rows1
    for start in range(0, len(rows1), batch_size):
        r1 = rows1[start:start + batch_size]
        b1 = hp.ds1.take(r1, h1, dtype="float32") if h1 else {}
        r2 = r1 if hp.rows2 is None else hp.rows2[start:start + batch_size]
        b2 = hp.ds2.take(r2, h2, dtype="float32") if h2 else {}
        yield [(b1 if side == "1" else b2)[h].reshape(len(r1), -1).double().numpy() for side, h in views]


def load_matched(hp: HookPairs, side: str, hook: str, max_rows: int | None, batch_size: int) -> np.ndarray:
    """One view's matched rows (or pooled stimuli) in memory, float64."""
    if hp.plans:
        plan = hp.plans[0] if side == "1" else hp.plans[1]
        x = load_items(hp.ds1 if side == "1" else hp.ds2, hook, plan, batch_size)
        return x[:max_rows] if max_rows else x
    parts, seen = [], 0
    for (x,) in stream_matched(hp, [(side, hook)], batch_size):
        parts.append(x)
        seen += len(x)
        if max_rows and seen >= max_rows:
            break
    x = np.concatenate(parts)
    return x[:max_rows] if max_rows else x

"""Model-side inputs: which dataset rows make each stimulus (matched by ``stimulus_id`` or ``example_id``,
optionally pooling a stimulus' token / patch rows), decided once for all hooks, and a hook's per-stimulus
features read in one streaming pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from analysis.common.stream import stream_rows
from shards.columns import EXAMPLE_ID, STIMULUS_ID
from shards.errors import ActlakeError
from shards.reader import Dataset

Pool = Literal["none", "mean", "first", "last", "max"]
KeyName = Literal["auto", "stimulus_id", "example_id"]


class MatchError(ActlakeError, ValueError):
    """The dataset's stimuli and the brain data's do not match as asked."""


def _names(ids: list[str], n: int = 10) -> str:
    shown = ", ".join(map(str, ids[:n]))
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


@dataclass(kw_only=True)
class StimulusPlan:
    """Rows → items: ``item_of_row[r]`` is the item (stimulus, or (stimulus, run)) row r belongs to, -1 if
    unused; items in the order of ``ids`` (the brain data's order)."""

    key: str
    ids: list[str]  #: one per stimulus, in the order the analysis uses
    item_of_row: np.ndarray
    n_items: int
    pool: Pool
    conditions: np.ndarray | None = None  #: per item: its stimulus index (crossnobis)
    runs: np.ndarray | None = None  #: per item: its run (crossnobis)
    dropped: list[str] | None = None

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.item_of_row >= 0)


def dataset_key(ds: Dataset, key: KeyName) -> str:
    if key != "auto":
        if key not in ds.columns:
            raise MatchError(f"the dataset has no {key!r} column (columns: {', '.join(ds.columns)})")
        return key
    return STIMULUS_ID if STIMULUS_ID in ds.columns else EXAMPLE_ID


def row_keys(ds: Dataset, key: str) -> np.ndarray:
    return np.asarray([str(v) for v in ds.metadata_table([key]).column(key).to_pylist()], dtype=object)


def match_ids(dataset_ids: list[str], wanted: list[str] | None, intersect: bool, what: str
              ) -> tuple[list[str], list[str]]:
    """The stimuli to use, in ``wanted``'s order (default: the dataset's first-appearance order), and those
    dropped by ``intersect``. A stimulus on one side only is an error naming it, unless ``intersect``."""
    if wanted is None:
        return list(dataset_ids), []
    have = set(dataset_ids)
    if len(set(wanted)) != len(wanted):
        dup = sorted({w for w in wanted if wanted.count(w) > 1})
        raise MatchError(f"{what}: stimulus ids repeat: {_names(dup)}")
    missing_model = [w for w in wanted if w not in have]
    wanted_set = set(wanted)
    missing_brain = [d for d in dataset_ids if d not in wanted_set]
    if (missing_model or missing_brain) and not intersect:
        parts = []
        if missing_model:
            parts.append(f"{len(missing_model)} stimuli of {what} are not in the dataset: {_names(missing_model)}")
        if missing_brain:
            parts.append(f"{len(missing_brain)} dataset stimuli are not in {what}: {_names(missing_brain)}")
        raise MatchError("; ".join(parts) + ". Fix the ids (--ids FILE gives the brain data's order) or pass "
                         "--intersect to keep the common stimuli.")
    keep = [w for w in wanted if w in have]
    return keep, missing_model + missing_brain


def plan_stimuli(ds: Dataset, key: KeyName, pool: Pool, wanted: list[str] | None, intersect: bool, what: str,
                 runs_column: str | None = None) -> StimulusPlan:
    """Match the dataset's rows to stimuli (checks everything before any hook is read)."""
    col = dataset_key(ds, key)
    keys = row_keys(ds, col)
    order = list(dict.fromkeys(keys.tolist()))
    ids, dropped = match_ids(order, wanted, intersect, what)
    index = {s: i for i, s in enumerate(ids)}
    stim_of_row = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
    if runs_column is not None:
        return _plan_runs(ds, col, ids, stim_of_row, runs_column, pool, dropped)
    counts = np.bincount(stim_of_row[stim_of_row >= 0], minlength=len(ids))
    if pool == "none" and counts.max(initial=0) > 1:
        raise MatchError(f"stimuli have up to {counts.max()} rows each (tokens or patches) in the dataset; "
                         "choose how to pool them: --pool mean|first|last|max")
    return StimulusPlan(key=col, ids=ids, item_of_row=stim_of_row, n_items=len(ids), pool=pool, dropped=dropped)


def _plan_runs(ds: Dataset, col: str, ids: list[str], stim_of_row: np.ndarray, runs_column: str, pool: Pool,
               dropped: list[str]) -> StimulusPlan:
    if runs_column not in ds.columns:
        raise MatchError(f"--runs {runs_column}: the dataset has no such column (columns: {', '.join(ds.columns)})")
    runs = np.asarray([str(v) for v in ds.metadata_table([runs_column]).column(runs_column).to_pylist()], object)
    used = stim_of_row >= 0
    pairs = {}
    item_of_row = np.full(len(stim_of_row), -1, dtype=np.int64)
    for r in np.flatnonzero(used):
        item_of_row[r] = pairs.setdefault((stim_of_row[r], runs[r]), len(pairs))
    conds = np.array([p[0] for p in pairs], dtype=np.int64)
    run_of_item = np.array([p[1] for p in pairs], dtype=object)
    return StimulusPlan(key=col, ids=ids, item_of_row=item_of_row, n_items=len(pairs),
                        pool="mean" if pool == "none" else pool, conditions=conds, runs=run_of_item, dropped=dropped)


def load_items(ds: Dataset, hook: str, plan: StimulusPlan, batch_size: int = 8192) -> np.ndarray:
    """Per-item features (n_items × numel, float64): the item's row, or its rows pooled."""
    d = ds.hook_spec(hook).numel
    out = np.full((plan.n_items, d), -np.inf if plan.pool == "max" else 0.0)
    counts = np.zeros(plan.n_items, dtype=np.int64)
    start = 0
    for b in stream_rows(ds, hook, batch_size):
        x = b["x"].double().numpy()
        items = plan.item_of_row[start:start + len(x)]
        start += len(x)
        sel = items >= 0
        if not sel.any():
            continue
        it, xs = items[sel], x[sel]
        if plan.pool in ("mean", "none"):
            np.add.at(out, it, xs)
        elif plan.pool == "max":
            np.maximum.at(out, it, xs)
        elif plan.pool == "first":
            first = counts[it] == 0
            # only the first occurrence per item in this batch and overall
            _, pos = np.unique(it, return_index=True)
            take = pos[first[pos]]
            out[it[take]] = xs[take]
        else:  # last: later rows overwrite
            out[it] = xs
        np.add.at(counts, it, 1)
    if plan.pool in ("mean", "none"):
        out /= np.maximum(counts, 1)[:, None]
    return out

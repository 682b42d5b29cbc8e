"""A hook's probe items: its rows (or pooled examples) in memory in the stored dtype when they fit the memory
budget, else streamed from the dataset on every pass; always standardised with the dataset's stored statistics."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from analysis.common.stream import stream_rows
from analysis.probe.problems import Features
from analysis.probe.targets import ProbeInputError, ProbePlan
from shards.reader import Dataset

log = logging.getLogger("actlake.probe")


def _selected_batches(ds: Dataset, hook: str, plan: ProbePlan, batch: int = 16384
                      ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """The plan's rows of ``hook`` in row order, as (positions in ``plan.rows``, rows in the stored dtype)."""
    start = 0
    hi = int(plan.rows[-1]) + 1 if len(plan.rows) else 0
    # a window of a few batches: the reader's default ~256 MiB shuffle window would sit beside the items
    for b in stream_rows(ds, hook, batch, dtype=None, max_rows=hi, window=4 * batch):
        x = b["x"]
        lo, up = np.searchsorted(plan.rows, [start, start + len(x)])
        if up > lo:
            yield np.arange(lo, up), x[torch.from_numpy(plan.rows[lo:up] - start)]
        start += len(x)
    if start < hi:  # never leave items unfilled: the plan and the rows read must be of one version
        raise ProbeInputError(f"{ds.storage.display()} (version {ds.version}) has {start} rows of {hook}; the probe "
                              f"was planned on {hi} or more. Plan and read one version (--data-version).")


def streams(ds: Dataset, hook: str, plan: ProbePlan, memory_budget: int) -> bool:
    """Whether ``load_features`` streams this hook's items (single rows over ``memory_budget`` bytes)."""
    spec = ds.hook_spec(hook)
    item_bytes = torch.empty((), dtype=_torch_dtype(spec.dtype)).element_size()
    return plan.pool != "mean" and plan.n_items * spec.numel * item_bytes > memory_budget


def load_features(ds: Dataset, hook: str, plan: ProbePlan, memory_budget: int) -> Features:
    """The items of ``plan`` for ``hook``: pooled means in float32, single rows in the stored dtype; streamed
    when they would take more than ``memory_budget`` bytes (not possible for mean pooling, which needs them all)."""
    spec = ds.hook_spec(hook)
    st = ds.stats(hook)
    mean = torch.as_tensor(np.asarray(st.mean, np.float64).reshape(-1))
    std = torch.as_tensor(np.asarray(st.std, np.float64).reshape(-1))
    inv = torch.where(std > 1e-12, 1.0 / std.clamp_min(1e-12), torch.ones_like(std))
    d = spec.numel
    if plan.pool == "mean":
        pooled = torch.zeros((plan.n_items, d), dtype=torch.float64)
        for pos, x in _selected_batches(ds, hook, plan):
            pooled.index_add_(0, torch.from_numpy(plan.item_of_row[pos]), x.double())
        counts = torch.from_numpy(np.bincount(plan.item_of_row, minlength=plan.n_items)).double().clamp_min(1)
        if plan.n_items * d * 4 > memory_budget:
            log.warning("%s: %d pooled examples x %d dims exceed --memory-budget; kept in memory anyway (mean "
                        "pooling needs every example's rows)", hook, plan.n_items, d)
        return Features(plan.n_items, d, mean, inv, x=(pooled / counts[:, None]).float())
    if not streams(ds, hook, plan, memory_budget):
        x = torch.empty((plan.n_items, d), dtype=_torch_dtype(spec.dtype))
        for pos, rows in _selected_batches(ds, hook, plan):
            x[torch.from_numpy(plan.item_of_row[pos])] = rows
        return Features(plan.n_items, d, mean, inv, x=x)
    log.info("%s: %d items x %d dims exceed --memory-budget (%d MB): streaming from the dataset", hook,
             plan.n_items, d, memory_budget >> 20)

    def stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for pos, rows in _selected_batches(ds, hook, plan):
            yield torch.from_numpy(plan.item_of_row[pos]), rows.float()

    return Features(plan.n_items, d, mean, inv, stream=stream)


def _torch_dtype(name: str) -> torch.dtype:
    return {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(name, torch.float32)

"""One hook's streaming pass: its rows in row order (with the other hooks some statistics compare it with),
fed to every family's accumulator, the seeded sample kept on the way; then each family's results."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from analysis.geometry.config import StatsConfig
from analysis.geometry.plan import StatsPlan
from analysis.geometry.registry import STATISTICS, Batch, HookContext, Sample, StatResult, TwoPass
from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID
from shards.progress import Progress
from shards.reader import Dataset

log = logging.getLogger("actlake.stats")


def to_float64(t: torch.Tensor) -> np.ndarray:
    """Stored values as float64 (exact for float16, bfloat16 and float32)."""
    return t.reshape(len(t), -1).to(torch.float64).numpy()


def label_codes(values, classes: np.ndarray) -> np.ndarray:
    """Each value's index in the sorted ``classes`` (as strings), -1 for values not among them (nulls)."""
    lab = np.asarray(values, dtype=object).astype(str)
    idx = np.searchsorted(classes, lab).clip(0, max(len(classes) - 1, 0))
    return np.where(classes[idx] == lab, idx, -1) if len(classes) else np.full(len(lab), -1)


def _context(cfg: StatsConfig, plan: StatsPlan, ds: Dataset, hook: str, emit) -> HookContext:
    return HookContext(hook=hook, width=ds.hook_spec(hook).numel, settings=cfg,
                       post_activation=hook.startswith("mlp_hidden."), classes=plan.classes, prev=plan.prev.get(hook),
                       sublayers=plan.sublayers.get(hook) if "norms" in plan.families else None,
                       lens=hook in plan.lens_hooks and plan.lens is not None,
                       emit=emit if hook in plan.chain and "voids" in plan.families else None)


def _extra_hooks(ctx: HookContext) -> list[str]:
    extra = [ctx.prev] if ctx.prev else []
    if ctx.sublayers:
        extra += [h for h in ctx.sublayers if h not in extra and h != ctx.hook]
    return extra


def _batch(raw: dict, ctx: HookContext, start: int, classes: np.ndarray, phase: str | None) -> Batch:
    x = to_float64(raw[ctx.hook])
    get = lambda h: to_float64(raw[h]) if h in raw else None  # noqa: E731
    attn, mlp, resid_in = ctx.sublayers or (None, None, None)
    return Batch(x=x, start=start, example_id=raw[EXAMPLE_ID].numpy(), position=raw[POSITION].numpy(),
                 token_id=raw[TOKEN_ID].numpy(),
                 label=label_codes(raw[ctx.settings.label], classes) if len(classes) else None,
                 phase=np.asarray(raw[phase], dtype=bool) if phase else None, prev=get(ctx.prev) if ctx.prev else None,
                 attn=get(attn) if attn else None, mlp=get(mlp) if mlp else None,
                 resid_in=get(resid_in) if resid_in else None)


def _columns(cfg: StatsConfig, plan: StatsPlan, classes: np.ndarray) -> list[str]:
    return [EXAMPLE_ID, POSITION, TOKEN_ID, *([cfg.label] if len(classes) else []),
            *([plan.phase_column] if plan.phase_column else [])]


def _first_pass(cfg: StatsConfig, plan: StatsPlan, ds: Dataset, ctx: HookContext, accs: list) -> tuple[Sample, int]:
    """Every batch to every accumulator, keeping the sample's rows on the way; (the sample, rows seen)."""
    classes = np.asarray(plan.classes, dtype=str)
    rows, xs, labels, positions, start = plan.sample_rows, [], [], [], 0
    it = ds.iter_batches([ctx.hook, *_extra_hooks(ctx)], batch_size=cfg.batch_size, shuffle=False,
                         columns=_columns(cfg, plan, classes), dtype=None, reuse_buffers=False, prefetch=2)
    with Progress(ds.num_rows, "row", f"stats {ctx.hook}", log, count="rows") as progress:
        for raw in it:
            b = _batch(raw, ctx, start, classes, plan.phase_column)
            for acc in accs:
                acc.update(b)
            lo, hi = np.searchsorted(rows, [start, start + len(b.x)])
            xs.append(b.x[rows[lo:hi] - start])
            positions.append(b.position[rows[lo:hi] - start])
            if b.label is not None:
                labels.append(b.label[rows[lo:hi] - start])
            start += len(b.x)
            progress.update(len(b.x), amount=len(b.x))
    sample = Sample(rows, np.concatenate(xs) if xs else np.zeros((0, ctx.width)),
                    np.concatenate(labels) if labels else None, plan.lens if ctx.lens else None,
                    np.concatenate(positions) if positions else np.zeros(0, np.int32))
    return sample, start


def _second_pass(cfg: StatsConfig, plan: StatsPlan, ds: Dataset, ctx: HookContext, accs: list) -> None:
    """The hook's rows once more, for the accumulators that need what the first pass found (``rescan``):
    Davies–Bouldin's mean distances to the class centroids."""
    classes = np.asarray(plan.classes, dtype=str)
    it = ds.iter_batches([ctx.hook], batch_size=cfg.batch_size, shuffle=False,
                         columns=_columns(cfg, plan, classes), dtype=None, reuse_buffers=False, prefetch=2)
    start = 0
    with Progress(ds.num_rows, "row", f"stats {ctx.hook} (second pass)", log, count="rows") as progress:
        for raw in it:
            b = _batch(raw, ctx, start, classes, plan.phase_column)
            for acc in accs:
                acc.rescan(b)
            start += len(b.x)
            progress.update(len(b.x), amount=len(b.x))


def run_pass(cfg: StatsConfig, plan: StatsPlan, ds: Dataset, hook: str, emit) -> StatResult:
    """Stream ``hook`` once (twice where a family needs a second pass) and return every family's results
    (``emit`` stores per-row blocks)."""
    ctx = _context(cfg, plan, ds, hook, emit)
    accs = [a for a in (STATISTICS[f].make(ctx) for f in plan.families) if a is not None]
    sample, rows = _first_pass(cfg, plan, ds, ctx, accs)
    again = [a for a in accs if isinstance(a, TwoPass)]
    if again:
        _second_pass(cfg, plan, ds, ctx, again)
    out = StatResult(scalars={"rows": rows})
    for acc in accs:
        out.merge(acc.finish(sample))
    return out


def _sample_batches(cfg: StatsConfig, plan: StatsPlan, ds: Dataset, ctx: HookContext, accs: list, rows: int
                    ) -> tuple[list[Batch], int, float]:
    """The hook's first ``rows`` rows through every accumulator, as the pass feeds them: (the batches, rows
    timed, their seconds). The first batch is not timed: opening the files and first calls are paid once per
    pass, not per row."""
    import time

    classes = np.asarray(plan.classes, dtype=str)
    it = ds.iter_batches([ctx.hook, *_extra_hooks(ctx)], batch_size=min(cfg.batch_size, max(rows // 8, 64)),
                         shuffle=False, columns=_columns(cfg, plan, classes), dtype=None, reuse_buffers=False,
                         prefetch=2)
    seen, timed_rows, batches, t0 = 0, 0, [], None
    for raw in it:
        b = _batch(raw, ctx, seen, classes, plan.phase_column)
        for acc in accs:
            acc.update(b)
        batches.append(b)
        seen += len(b.x)
        if t0 is None:
            t0 = time.perf_counter()
        else:
            timed_rows += len(b.x)
        if seen >= rows:
            break
    return batches, timed_rows, time.perf_counter() - t0 if t0 is not None else 0.0


def estimate_hook(cfg: StatsConfig, plan: StatsPlan, ds: Dataset, hook: str):
    """One hook's cost from a timed sample: its first rows (1/20 of them, 2,000 .. 20,000) through every
    accumulator, scaled to all rows and passes, plus the sample-based statistics timed on as many sample rows as
    were read, scaled linearly to the sample's size (measured on the concepts demo: TwoNN's neighbour search and
    the cluster indices grew close to linearly from 2,000 to 10,000 rows; docs/benchmarks.md)."""
    from analysis.common.cost import CostEstimate, scaled, timed

    ctx = dataclasses.replace(_context(cfg, plan, ds, hook, lambda *a: None), lens=False)
    accs = [a for a in (STATISTICS[f].make(ctx) for f in plan.families) if a is not None]
    want = min(ds.num_rows, max(2000, min(20000, ds.num_rows // 20)))
    batches, timed_rows, t_pass = _sample_batches(cfg, plan, ds, ctx, accs, want)
    seen = sum(len(b.x) for b in batches)
    passes = 2 if any(isinstance(a, TwoPass) for a in accs) else 1
    s = min(len(plan.sample_rows), seen)
    x = np.concatenate([b.x for b in batches])[:s]
    label = np.concatenate([b.label for b in batches])[:s] if batches and batches[0].label is not None else None
    sample = Sample(np.arange(s), x, label, None, np.concatenate([b.position for b in batches])[:s])
    _, t_finish = timed(lambda: [acc.finish(sample) for acc in accs])
    fixed = t_finish * len(plan.sample_rows) / max(s, 1)
    seconds, basis = scaled(t_pass * passes, max(timed_rows, 1), ds.num_rows, "rows", fixed=fixed)
    work = (f"{ds.num_rows:,} rows × {ctx.width} dims × {passes} pass{'es' if passes > 1 else ''} "
            f"({', '.join(plan.families)}; sample {len(plan.sample_rows):,})")
    return CostEstimate(work, seconds, basis)

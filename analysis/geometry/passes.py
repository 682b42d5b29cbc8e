"""One hook's streaming pass: its rows in row order (with the other hooks some statistics compare it with),
fed to every family's accumulator, the seeded sample kept on the way; then each family's results."""

from __future__ import annotations

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

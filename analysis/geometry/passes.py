"""One hook's streaming pass: its rows in row order (with the other hooks some statistics compare it with),
fed to every family's accumulator, the seeded sample kept on the way; then each family's results."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from analysis.geometry.config import StatsConfig
from analysis.geometry.plan import StatsPlan
from analysis.geometry.registry import STATISTICS, Batch, HookContext, Sample, StatResult
from shards.progress import Progress
from shards.reader import Dataset

log = logging.getLogger("actlake.stats")


@dataclass
class HookJob:
    """What each hook's task receives: the settings and the driver's plan."""

    cfg: StatsConfig
    plan: StatsPlan


def to_float64(t: torch.Tensor) -> np.ndarray:
    """Stored values as float64 (exact for float16, bfloat16 and float32)."""
    return t.reshape(len(t), -1).to(torch.float64).numpy()


def label_codes(values, classes: np.ndarray) -> np.ndarray:
    """Each value's index in the sorted ``classes`` (as strings), -1 for values not among them (nulls)."""
    lab = np.asarray(values, dtype=object).astype(str)
    idx = np.searchsorted(classes, lab).clip(0, max(len(classes) - 1, 0))
    return np.where(classes[idx] == lab, idx, -1) if len(classes) else np.full(len(lab), -1)


def _context(job: HookJob, ds: Dataset, hook: str, emit) -> HookContext:
    plan = job.plan
    return HookContext(hook, ds.hook_spec(hook).numel, job.cfg, hook.startswith("mlp_hidden."), plan.classes,
                       plan.prev.get(hook), plan.sublayers.get(hook) if "norms" in plan.families else None,
                       hook in plan.lens_hooks and plan.lens is not None,
                       emit if hook in plan.chain and "voids" in plan.families else None)


def _extra_hooks(ctx: HookContext) -> list[str]:
    extra = [ctx.prev] if ctx.prev else []
    if ctx.sublayers:
        extra += [h for h in ctx.sublayers if h not in extra and h != ctx.hook]
    return extra


def _batch(raw: dict, ctx: HookContext, start: int, classes: np.ndarray, phase: str | None) -> Batch:
    x = to_float64(raw[ctx.hook])
    get = lambda h: to_float64(raw[h]) if h in raw else None  # noqa: E731
    attn, mlp, resid_in = ctx.sublayers or (None, None, None)
    return Batch(x, start, raw["example_id"].numpy(), raw["position"].numpy(), raw["token_id"].numpy(),
                 label_codes(raw[ctx.settings.label], classes) if len(classes) else None,
                 np.asarray(raw[phase], dtype=bool) if phase else None,
                 get(ctx.prev) if ctx.prev else None, get(attn) if attn else None, get(mlp) if mlp else None,
                 get(resid_in) if resid_in else None)


def run_pass(job: HookJob, ds: Dataset, hook: str, emit) -> StatResult:
    """Stream ``hook`` once and return every family's results (``emit`` stores per-row blocks)."""
    cfg, plan = job.cfg, job.plan
    ctx = _context(job, ds, hook, emit)
    accs = [a for a in (STATISTICS[f].make(ctx) for f in plan.families) if a is not None]
    classes = np.asarray(plan.classes, dtype=str)
    columns = ["example_id", "position", "token_id", *([cfg.label] if len(classes) else []),
               *([plan.phase_column] if plan.phase_column else [])]
    hooks = [hook, *_extra_hooks(ctx)]
    rows, xs, labels, positions, start = plan.sample_rows, [], [], [], 0
    it = ds.iter_batches(hooks, batch_size=cfg.batch_size, shuffle=False, columns=columns, dtype=None,
                         reuse_buffers=False, prefetch=2)
    with Progress(ds.num_rows, "row", f"stats {hook}", log, count="rows") as progress:
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
    out = StatResult(scalars={"rows": start})
    for acc in accs:
        out.merge(acc.finish(sample))
    return out

"""Per-hook summaries of fold scores (mean, std, t-interval, selectivity) and concept depth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shards.records import JsonRecord


def ci95(values) -> tuple[float, float]:
    """The 95 % t-interval of the mean of ``values`` (folds): mean ± t(0.975, n−1) · sd / √n."""
    from scipy import stats

    v = np.asarray([x for x in values if x == x], dtype=np.float64)
    if len(v) < 2:
        m = float(v.mean()) if len(v) else math.nan
        return m, m
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean() - half), float(v.mean() + half)


@dataclass(kw_only=True)
class HookSummary(JsonRecord):
    """One hook: the mean test score over folds, its spread, the control task and the penalty used."""

    layer_index: int
    mean: float
    std: float  #: across folds (ddof = 1)
    ci95: list[float]
    control_mean: float | None
    selectivity: float | None  #: mean − control_mean
    reg: float  #: the final fit's penalty (the median of the folds' choices)

    @classmethod
    def of(cls, layer: int, values: list[float], controls: list[float] | None, reg: float) -> HookSummary:
        v = np.asarray(values, np.float64)
        mean = float(np.nanmean(v))
        control = float(np.nanmean(controls)) if controls else None
        return cls(layer_index=layer, mean=mean, std=float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0,
                   ci95=list(ci95(v)), control_mean=control, selectivity=None if control is None else mean - control,
                   reg=reg)


@dataclass
class ConceptDepth(JsonRecord):
    """The first hook (in layer order) whose mean reaches ``threshold`` x the best hook's mean; undefined (``hook``
    and ``layer_index`` None) when the best mean is 0 or below (an R² below 0 on every hook: no hook predicts the
    label better than its mean, and a share of a negative score means nothing). ``best_hook`` is still named."""

    threshold: float
    hook: str | None
    layer_index: int | None
    best_hook: str | None = None
    best_mean: float | None = None


def concept_depth(hooks: dict[str, HookSummary], threshold: float) -> ConceptDepth:
    """``hooks`` in layer order (as they come from ``in_layer_order``)."""
    scored = {h: s for h, s in hooks.items() if s.mean == s.mean}
    if not scored:
        return ConceptDepth(threshold, None, None)
    best = max(scored, key=lambda h: scored[h].mean)
    top = scored[best].mean
    if not top > 0:
        return ConceptDepth(threshold, None, None, best, top)
    first = next(h for h, s in scored.items() if s.mean >= threshold * top)
    return ConceptDepth(threshold, first, scored[first].layer_index, best, top)

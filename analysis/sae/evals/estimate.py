"""``sae evaluate``'s cost before it starts: each metric of the suite run once on the smaller of two samples of
the examples (2 % and 5 %, at least 100 and 250 examples, at most 5 % and 10 %) to warm up (first calls,
caches), then timed on both, its time fitted as a + b·size (``EvalMetric.size``: the rows it reads) and read off
at the full inputs' size. The samples cost about a tenth of the run, a fifth at most; a metric that cannot run
on a sample (too few examples of a class in it) is left out of the estimate, and the line says so."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa

from analysis.common.cost import CostEstimate, timed
from analysis.sae.evals.registry import EvalInputs, get_metric
from shards.columns import EXAMPLE_ID

log = logging.getLogger("actlake.sae")
FRACTIONS = (0.02, 0.05)
MIN_EXAMPLES = (100, 250)
CAPS = (0.05, 0.10)


def sampled(inputs: EvalInputs, n_examples: int) -> EvalInputs:
    """The inputs restricted to ``n_examples`` seeded examples: their rows of ``rows`` and of the metadata (whose
    row ``i`` then reads global row ``i``: other rows than the examples', the same number; only timed)."""
    ids = inputs.meta.column(EXAMPLE_ID).to_numpy()
    examples = np.unique(ids)
    keep = np.random.default_rng(inputs.seed).choice(examples, min(n_examples, len(examples)), replace=False)
    mask = np.isin(ids, keep)
    meta = inputs.meta.filter(pa.array(mask))
    rows = inputs.rows[mask[inputs.rows]]
    return dataclasses.replace(inputs, rows=rows, meta=meta, progress=lambda _m: None)


def _fit(points: list[tuple[int, float]], size: int) -> float | None:
    """a + b·size through two (size, seconds) points; b >= 0, and a >= 0 (noise on small samples). None when the
    samples held none of the metric's work (its rows are in other examples)."""
    (n1, t1), (n2, t2) = points
    if n2 <= 0:
        return None
    b = max((t2 - t1) / (n2 - n1), 0.0) if n2 > n1 else t2 / n2
    a = max(t2 - b * n2, 0.0)
    return a + b * size


def _time_metric(name: str, samples: list[EvalInputs], full: int) -> float | None:
    metric = get_metric(name)
    points = []
    for sub in [samples[0], *samples]:
        try:
            _, t = timed(lambda sub=sub: metric.fn(sub))
        except Exception as exc:  # noqa: BLE001 - a sample too small for the metric: no estimate, not a failure
            log.debug("estimate of %s: a sample failed (%s)", name, exc)
            return None
        points.append((metric.size_of(sub), t))
    return _fit(points[1:], full)  # the first run warmed up


def estimate_suite(names: list[str], inputs: EvalInputs) -> CostEstimate:
    """What the suite ``names`` will cost on ``inputs`` (see the module)."""
    n_ex = len(np.unique(inputs.meta.column(EXAMPLE_ID).to_numpy()))
    sizes_ex = [min(max(m, int(f * n_ex)), int(c * n_ex)) for f, m, c in zip(FRACTIONS, MIN_EXAMPLES, CAPS,
                                                                             strict=True)]
    if sizes_ex[0] < 5:
        return CostEstimate(", ".join(names), 0.0, f"{n_ex} examples: too few to time a sample of")
    log.info("timing the suite on samples of %d and %d examples to estimate its cost", *sizes_ex)
    samples = [sampled(inputs, n) for n in sizes_ex]
    parts, sizes, untimed = {}, {}, []
    for name in names:
        sizes[name] = get_metric(name).size_of(inputs)
        t = _time_metric(name, samples, sizes[name])
        if t is None:
            untimed.append(name)
        else:
            parts[name] = t
    work = f"{', '.join(names)} on {len(inputs.meta):,} rows of {n_ex:,} examples ({len(inputs.rows):,} for core)"
    basis = (f"each metric timed on {len(samples[0].rows):,} and {len(samples[1].rows):,} rows of "
             f"{len(np.unique(samples[0].meta.column(EXAMPLE_ID).to_numpy()))} and "
             f"{len(np.unique(samples[1].meta.column(EXAMPLE_ID).to_numpy()))} examples, fitted a + b·rows: "
             + ", ".join(f"{k} ~{v:.0f} s" for k, v in parts.items())
             + (f"; not estimated: {', '.join(untimed)}" if untimed else ""))
    return CostEstimate(work, sum(parts.values()), basis, parts)

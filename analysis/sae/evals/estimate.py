"""``sae evaluate``'s cost before it starts: each metric of the suite timed on two seeded samples of the examples
(2 % and 5 %, at least 100 and 250 examples, at most 5 % and 12.5 %), its time fitted as a + b·work
(``EvalMetric.size``: the rows it reads, or for a metric that fits per label class or per letter the items of its
fits, since a sample has fewer classes and letters) and read off at the full inputs' work: the fixed part (a
probe per letter, figures) is not scaled with the rows. One read and encode of a few hundred rows first takes
the first calls' cost out of the timings. The samples cost about a tenth of the run, more where a metric caps its
own work (absorption: at most 30,000 rows); a metric that cannot run on a sample (too few examples of a class)
is left out of the estimate, and the line says so. Measured against the runs in docs/benchmarks.md
(`tests/benchmarks/bench_evaluate_cost.py`).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa

from analysis.common.cost import CostEstimate, timed
from analysis.sae.evals.registry import EvalInputs, get_metric
from shards.columns import EXAMPLE_ID

log = logging.getLogger("actlake.sae")
FRACTIONS, MIN_EXAMPLES, CAPS = (0.02, 0.05), (100, 250), (0.05, 0.125)


def sampled(inputs: EvalInputs, n_examples: int) -> EvalInputs:
    """The inputs restricted to ``n_examples`` seeded examples' metadata (whose row ``i`` then reads global row
    ``i``: other rows than the examples', the same number; only timed) and the same share of ``rows``."""
    ids = inputs.meta.column(EXAMPLE_ID).to_numpy()
    examples = np.unique(ids)
    keep = np.random.default_rng(inputs.seed).choice(examples, min(n_examples, len(examples)), replace=False)
    mask = np.isin(ids, keep)
    meta = inputs.meta.filter(pa.array(mask))
    # core reads ``rows`` (often the held-out examples, few of which a sample of all examples holds): the same
    # share of them, at least a batch's worth
    rows = inputs.rows[: max(min(256, len(inputs.rows)), len(inputs.rows) * len(keep) // max(len(examples), 1))]
    return dataclasses.replace(inputs, rows=rows, meta=meta, progress=lambda _m: None)


def _fit(points: list[tuple[int, float]], size: int) -> float | None:
    """a + b·size through two (work, seconds) points, b >= 0 and a >= 0 (noise on small samples); None when the
    samples held none of the metric's work."""
    (n1, t1), (n2, t2) = points
    if n2 <= 0:
        return None
    b = max((t2 - t1) / (n2 - n1), 0.0) if n2 > n1 else t2 / n2
    return max(t2 - b * n2, 0.0) + b * size


def _time_metric(name: str, samples: list[EvalInputs], full: int) -> float | None:
    """The metric timed on each sample, fitted and read off at ``full`` work; None when it cannot run there."""
    metric = get_metric(name)
    points = []
    for sample in samples:
        try:
            _, t = timed(lambda sample=sample: metric.fn(sample))
        except Exception as exc:  # noqa: BLE001 - a sample too small for the metric: no estimate, not a failure
            log.debug("estimate of %s: a sample failed (%s)", name, exc)
            return None
        points.append((metric.size_of(sample), t))
    return _fit(points, full)


def _warm_up(inputs: EvalInputs) -> None:
    """The first read and encode (file handles, torch's first calls) out of the timings."""
    import torch

    rows = inputs.rows[:256] if len(inputs.rows) else np.arange(min(256, len(inputs.meta)))
    with torch.no_grad():
        inputs.sae.encode(inputs.read(rows, [])["x"])


def estimate_suite(names: list[str], inputs: EvalInputs) -> CostEstimate:
    """What the suite ``names`` will cost on ``inputs`` (see the module)."""
    n_ex = len(np.unique(inputs.meta.column(EXAMPLE_ID).to_numpy()))
    sizes = [min(max(m, int(f * n_ex)), int(c * n_ex)) for f, m, c in zip(FRACTIONS, MIN_EXAMPLES, CAPS, strict=True)]
    work = f"{', '.join(names)} on {len(inputs.meta):,} rows of {n_ex:,} examples ({len(inputs.rows):,} for core)"
    if sizes[0] < 5:
        return CostEstimate(work, 0.0, f"{n_ex} examples: too few to time a sample of")
    log.info("timing the suite on samples of %d and %d of %d examples to estimate its cost", *sizes, n_ex)
    _warm_up(inputs)
    samples = [sampled(inputs, n) for n in sizes]
    parts, untimed = {}, []
    for name in names:
        t = _time_metric(name, samples, get_metric(name).size_of(inputs))
        if t is None:
            untimed.append(name)
        else:
            parts[name] = t
    basis = (f"each metric timed on {sizes[0]:,} and {sizes[1]:,} examples, fitted a + b·work: "
             + ", ".join(f"{k} ~{v:.0f} s" for k, v in parts.items())
             + (f"; not estimated: {', '.join(untimed)}" if untimed else ""))
    return CostEstimate(work, sum(parts.values()), basis, parts)

"""``sae evaluate`` metrics by name: each file of ``analysis/sae/evals/`` registers one metric with what it
needs; the command gives it its inputs (``EvalInputs``) and writes what it returns (``EvalOutcome``). A metric does
no I/O of its own (it reads rows through ``EvalInputs.read``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shards.config import did_you_mean
from shards.errors import ActlakeError


class EvalInputError(ActlakeError, ValueError):
    """A metric cannot run on this SAE or dataset (no labels, no token ids, no ground truth)."""


@dataclass
class EvalInputs:
    """What a metric receives."""

    sae: object  #: the SAE (analysis.sae.base.SparseAutoencoder), eval mode, raw units
    hook: str
    rows: np.ndarray  #: global row indices to evaluate on (held-out examples when the SAE records its split)
    read: Callable[[np.ndarray, list[str]], dict]  #: rows -> {"x": (n, d_in) float32 tensor, "y": a transcoder's
    #: target, column: values}
    columns: list[str]  #: the dataset's metadata columns
    meta: object  #: pyarrow Table of example_id, position, token_id for every row (row order)
    token_text: Callable[[int], str] | None = None  #: a token id's text (None: no tokenizer loads offline)
    synthetic: object | None = None  #: analysis.sae.synthetic.SyntheticData of a synthetic dataset
    seed: int = 0
    labels: list[str] = field(default_factory=list)  #: --labels (empty: every suitable metadata column)
    min_position: int = 0  #: rows at positions below this are not read (the SAE's training filter, or the user's)
    progress: Callable[[str], None] = lambda _msg: None


@dataclass
class EvalOutcome:
    """What a metric returns: summary numbers (``<metric>.json``), tables and figures."""

    summary: dict
    tables: dict = field(default_factory=dict)  #: file name -> pyarrow Table or dict of columns
    figures: dict = field(default_factory=dict)  #: file name -> matplotlib Figure


@dataclass(frozen=True)
class EvalMetric:
    name: str
    fn: Callable[[EvalInputs], EvalOutcome]
    help: str


METRICS: dict[str, EvalMetric] = {}


def register(metric: EvalMetric) -> EvalMetric:
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> EvalMetric:
    if name not in METRICS:
        raise EvalInputError(f"unknown evaluation {name!r}.{did_you_mean(name, list(METRICS), n=3)} "
                             f"Known: {', '.join(METRICS)}")
    return METRICS[name]

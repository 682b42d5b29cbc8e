"""``sae evaluate`` metrics by name: each file of ``analysis/sae/evals/`` registers one metric with what it
needs; the command gives it its inputs (``EvalInputs``) and writes what it returns (``EvalOutcome``). A metric does
no I/O of its own (it reads rows through ``EvalInputs.read``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shards.errors import ActlakeError
from shards.registry import Registry


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
    """A registered evaluation: ``fn`` computes it from its inputs; ``order`` is its place in the suite (and in
    ``summary.json``); ``missing(inputs)`` says why this dataset cannot give it what it needs (no labels, no
    tokenizer, no ground truth), or None: ``--suite auto`` runs every metric with nothing missing and names the
    reason for each one it leaves out. A metric without ``missing`` always runs."""

    name: str
    fn: Callable[[EvalInputs], EvalOutcome]
    help: str
    order: int = 100
    missing: Callable[[EvalInputs], str | None] | None = None
    #: what its cost grows with, counted on these inputs (rows it reads; default: ``len(inputs.rows)``): the
    #: estimate before a run times the metric on two small samples and fits a + b·size (``estimate.py``)
    size: Callable[[EvalInputs], int] | None = None

    def size_of(self, inputs: EvalInputs) -> int:
        """How much work this metric has on ``inputs`` (``size``)."""
        return self.size(inputs) if self.size is not None else len(inputs.rows)


METRICS: Registry[EvalMetric] = Registry("evaluation", EvalInputError)
register, get_metric = METRICS.register, METRICS.lookup


def auto_suite(inputs: EvalInputs) -> tuple[list[str], dict[str, str]]:
    """``--suite auto``: the metrics these inputs can feed, in order, and why each other one is left out."""
    names, skipped = [], {}
    for metric in METRICS.values():
        why = metric.missing(inputs) if metric.missing is not None else None
        if why:
            skipped[metric.name] = why
        else:
            names.append(metric.name)
    return names, skipped

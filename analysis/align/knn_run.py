"""``actlake align knn``: mutual k-nearest-neighbour alignment between hooks of one or two datasets, through the
metric registry (``metrics/knn.py``: each hook's neighbour lists are computed once, blocked: memory
O(N·k + block·N), and shared by all its pairs)."""

from __future__ import annotations

from analysis.align.config import KnnConfig
from analysis.align.pairs_run import PairSummary, run_pairs
from analysis.align.sweep import is_pattern, sweep_pairs

CONFIG = KnnConfig


def run(cfg: KnnConfig) -> PairSummary:
    """Mutual k-NN alignment between hook pairs; returns what ``summary.json`` holds. A pattern in ``--data``
    (``zoo/*``) compares every pair of matching datasets (``sweep.py``)."""
    if is_pattern(cfg.data):
        return sweep_pairs(cfg, run, "align knn")
    return run_pairs(cfg)

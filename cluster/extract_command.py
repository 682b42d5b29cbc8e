"""``actlake extract``: the extraction driver (``ingest``) handed the intervention kinds (``analysis``), which
``ingest`` does not import (docs/architecture.md, "The model in the loop")."""

from __future__ import annotations

from cluster.zoo import ZooSummary, run_zoo
from ingest.config import ExtractConfig
from ingest.driver import ExtractionSummary, run_extraction


def cmd_extract(cfg: ExtractConfig) -> ExtractionSummary | ZooSummary:
    """Run (or resume) an extraction job, with its ``--intervene`` specs built by ``analysis.interventions``;
    with ``--zoo``, one job per model of the zoo file (``cluster/zoo.py``)."""
    from analysis.interventions import build
    from ingest.driver import plan_extraction

    if cfg.zoo:  # every model still to run planned (hooks, sources) before the first runs
        return run_zoo(cfg, lambda c: run_extraction(c, resolver=build),
                       check=lambda c: plan_extraction(c, resolver=build))
    return run_extraction(cfg, resolver=build)

"""``actlake extract``: the extraction driver (``ingest``) handed the intervention kinds (``analysis``), which
``ingest`` does not import (docs/architecture.md, "The model in the loop")."""

from __future__ import annotations

from ingest.config import ExtractConfig
from ingest.driver import ExtractionSummary, run_extraction


def cmd_extract(cfg: ExtractConfig) -> ExtractionSummary:
    """Run (or resume) an extraction job, with its ``--intervene`` specs built by ``analysis.interventions``."""
    from analysis.interventions import build

    return run_extraction(cfg, resolver=build)

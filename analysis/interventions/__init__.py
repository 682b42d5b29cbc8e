"""Interventions during extraction: one kind per file, registered by name in ``registry``.

``build`` is the resolver ``ingest`` takes for ``--intervene`` specs."""

from analysis.interventions import ablate, add, clamp, mean, splice, zero  # noqa: F401 - registers the kinds
from analysis.interventions.registry import KINDS, build, get_kind

__all__ = ["KINDS", "build", "get_kind"]

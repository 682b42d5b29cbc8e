"""The modality interface: plan a job, prepare a unit's inputs (outside the forward lock), run the forward."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ingest.config import ExtractConfig
from ingest.models import LoadedModel
from ingest.plan import ExtractionPlan, InputSelection, UnitRows, WorkUnit


class Modality(ABC):
    """One kind of input (text, images). The driver calls ``plan``; each actor builds one instance from the
    plan and its own copy of the model, then for every unit calls ``prepare`` (decoding, tokenising:
    overlaps the other unit's forward pass) and ``forward`` (under the actor's forward lock)."""

    name: ClassVar[str]
    counts: ClassVar[str]  #: what progress and the summary count (tokens, images)

    @classmethod
    @abstractmethod
    def detects(cls, cfg: ExtractConfig, loaded: LoadedModel) -> bool:
        """Whether ``--modality auto`` means this one for this model and data."""

    @classmethod
    @abstractmethod
    def plan(cls, cfg: ExtractConfig, loaded: LoadedModel, selection: InputSelection | None = None) -> ExtractionPlan:
        """Check and resolve everything (hooks, inputs, output schema) before any work starts; ``selection``
        restricts the inputs to what a scheduled tick extracts."""

    @classmethod
    @abstractmethod
    def probe_inputs(cls, plan: ExtractionPlan, loaded: LoadedModel) -> dict:
        """One small model input (keyword arguments of the forward) that tells each hook's shape."""

    @abstractmethod
    def __init__(self, plan: ExtractionPlan, loaded: LoadedModel) -> None:
        """Open the inputs and build the extractor, in an actor, from the resolved plan."""

    @abstractmethod
    def prepare(self, unit: WorkUnit) -> Any:
        """A unit's model inputs, ready for ``forward``; no model call here."""

    @abstractmethod
    def forward(self, prepared: Any) -> UnitRows:
        """Run the model on prepared inputs and turn its activations into rows."""

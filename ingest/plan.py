"""The extraction plan: everything decided before any work starts, handed to every actor as it is."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ingest.config import ExtractConfig
from ingest.hooks import HookPoint
from ingest.inloop import ModelInLoop
from ingest.models import LoadedModel
from shards.manifest import ModelInfo, Provenance, SkippedInput
from shards.schema import HookSpec


@dataclass(frozen=True)
class WorkUnit:
    """Examples [start, stop) of the input, written as one Parquet file named by ``id``."""

    id: int
    start: int
    stop: int


@dataclass(frozen=True)
class InputSelection:
    """Part of a growing input that one scheduled tick extracts (see ``ingest.incremental``)."""

    files: tuple[str, ...] = ()  #: these files of the job's glob or folder, in this order
    rows: tuple[int, int] | None = None  #: rows [start, stop) of a growing table (``data`` is one file)


@dataclass
class UnitRows:
    """What a modality's forward pass gives for one unit: its columns, how much it ran, what it left out."""

    columns: dict
    count: int  #: tokens or images run
    skipped: tuple[SkippedInput, ...] = ()


@dataclass(kw_only=True)
class ExtractionPlan:
    """A resolved extraction job: no raw option is resolved again after this (actors receive it whole)."""

    config: ExtractConfig  #: the options, with modality and pool made explicit
    modality: str
    model: ModelInfo
    hooks: list[HookPoint]
    hook_specs: dict[str, HookSpec]  #: what each hook stores
    columns: dict[str, str]  #: metadata columns and their types
    num_examples: int
    provenance: Provenance
    identity: dict  #: the settings that make this job: a dataset made by another job is never appended to
    inputs: Any  #: the modality's resolved inputs (``TextInputs``, ``ImageInputs``)
    #: files stored with the dataset (name -> bytes); the driver writes them and empties this before
    #: the plan is shipped to actors
    artifacts: dict[str, bytes] = field(default_factory=dict, repr=False)
    #: a scheduled tick appends to a dataset: its units and example ids continue after the earlier ticks'
    unit_base: int = 0
    example_base: int = 0
    #: interventions, loss and logit columns, comparison passes (empty: a plain extraction)
    in_loop: ModelInLoop = field(default_factory=ModelInLoop)

    def units(self) -> list[WorkUnit]:
        """Units of examples [start, stop) of this plan's inputs; ids from ``unit_base`` on."""
        size = self.config.unit_size
        return [WorkUnit(self.unit_base + u, u * size, min((u + 1) * size, self.num_examples))
                for u in range(math.ceil(self.num_examples / size))]


def base_identity(cfg: ExtractConfig, loaded: LoadedModel, hooks: list[HookPoint], modality: str, examples: int,
                  **settings) -> dict:
    """The job identity every modality shares, plus its own ``settings``. Hooks are compared as the set of
    resolved hook points, so ``embed,resid.*`` and ``resid.*,embed`` are one job."""
    info = loaded.info()
    points = sorted(f"{h.name}={h.module}{' (input)' if h.read_input else ''}" for h in hooks)
    return {"model": cfg.model, "architecture": info.architecture, "parameters": info.parameters,
            "model_dtype": cfg.model_dtype, "modality": modality, "data": cfg.data, "examples": examples,
            "hooks": points, "dtype": cfg.dtype, "unit_size": cfg.unit_size, **settings}


def base_provenance(loaded: LoadedModel, cfg: ExtractConfig, examples: int, **sections) -> Provenance:
    return Provenance(model=loaded.info(), details={
        **sections, "work_units": {"unit_size": cfg.unit_size, "units": math.ceil(examples / cfg.unit_size)}})


def stored_hooks(hooks: list[HookPoint], shapes: dict[str, list[int]], dtype: str) -> dict[str, HookSpec]:
    return {h.name: HookSpec(h.name, tuple(int(s) for s in shapes[h.name]), dtype, module=h.module) for h in hooks}

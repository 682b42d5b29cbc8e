"""The intervention protocol: the types both sides of a model-in-the-loop job name.

``ingest`` runs the forward pass and applies interventions (``ingest.interventions.intervening``); ``analysis``
builds them from SAEs and probe directions (``analysis.interventions``). Each side names these types, and neither
may import the other (DESIGN.md: ``ingest`` and ``analysis`` import only ``shards``), so they live here, on the
bottom floor, and hold nothing else: no model code, no torch at import time. ``HookPoint`` is here because an
``Intervention`` and its ``ResolveContext`` name the hook they act at; ``ingest.hooks`` resolves hook names to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from shards.errors import InterventionError

if TYPE_CHECKING:
    import torch

    from shards.manifest import ModelInfo


@dataclass(frozen=True)
class HookPoint:
    """Where to read: a module, and whether its input (pre-hook) or output."""

    name: str  #: the name stored in the dataset
    module: str  #: dotted module path inside the model
    read_input: bool = False  #: read the module's (first) input instead of its output
    block: int | None = None  #: block index, for stopping the forward early


_SPEC = re.compile(r"^(?P<hook>[^:\s]+):(?P<kind>[A-Za-z_][\w-]*)(?::(?P<options>.*))?$")


@dataclass(frozen=True)
class InterventionSpec:
    """``HOOK:KIND[:key=value,...]`` as given on the command line or in a job file."""

    hook: str
    kind: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> InterventionSpec:
        """Parse ``resid.3:add:direction=runs/probe#animal,scale=4``; a malformed text names the expected form."""
        m = _SPEC.match(text.strip())
        if not m:
            raise InterventionError(f"--intervene {text!r}: expected HOOK:KIND[:key=value,...], e.g. "
                                    "'resid.3:splice:sae=runs/topk' or 'resid.3:add:direction=dir.npy,scale=4'")
        options: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in (m.group("options") or "").split(","))):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise InterventionError(f"--intervene {text!r}: option {part!r} is not key=value")
            if key.strip() in options:
                raise InterventionError(f"--intervene {text!r}: option {key.strip()!r} given twice")
            options[key.strip()] = value.strip()
        return cls(m.group("hook"), m.group("kind").lower(), options)

    def text(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.hook}:{self.kind}" + (f":{opts}" if opts else "")


@runtime_checkable
class Intervention(Protocol):
    """One change to one hook's activations, built before any work starts and shipped to every actor.

    ``apply`` receives the hook's activations ``(batch, positions, ...)`` (or ``(batch, ...)`` for images)
    and returns a tensor of the same shape and dtype. ``identity`` is what makes two runs the same job
    (kind, options, the checksums and dataset ids of its sources); it goes into the job identity and the
    manifest's provenance. A protocol, not a base class: the kinds in ``analysis`` implement it by their shape,
    and ``ingest`` checks built ones with ``isinstance`` (runtime-checkable).
    """

    hook: HookPoint
    kind: str

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The activations later layers see instead of ``x``."""

    def identity(self) -> dict:
        """Kind, options and sources (checksums, dataset ids): JSON, no secrets."""


@dataclass(frozen=True)
class ResolveContext:
    """What building an intervention may look at: the loaded model, the resolved hook and its per-token shape."""

    model: object
    hook: HookPoint
    shape: tuple[int, ...]  #: per-token (or per-image) shape of the hook's activations
    storage: object = None  #: StorageOptions for the sources (SAEs, probe runs, datasets)
    force: bool = False  #: go ahead where a source was made for another hook or model (warned)
    model_info: ModelInfo | None = None  #: what the manifest records about the model (None: not checked)
    #: the most token positions an input has (text: --context-size); 0: inputs without positions (images), where
    #: ``from_position`` changes nothing; None: not known (not checked)
    positions: int | None = None


@runtime_checkable
class Resolver(Protocol):
    """Builds interventions from their specs (``analysis.interventions.build``), in two steps: ``check`` before
    the model loads (the spec's options and sources: a NaN scale, a pickled or non-numeric file, a missing SAE
    fail in seconds, not after a model load), then the call itself against the loaded model's hook."""

    def __call__(self, spec: InterventionSpec, ctx: ResolveContext) -> Intervention:
        """The intervention ``spec`` names, checked against the hook ``ctx`` describes."""

    def check(self, spec: InterventionSpec, storage: object = None) -> None:
        """Raise ``InterventionError`` if ``spec``'s options or sources are bad, without the model."""

"""Interventions inside the forward pass: the interface the extraction actor applies, and how it applies them.

An intervention takes a hook's module output (or, for input hooks such as ``mlp_hidden.N``, the module's
input) and returns what later layers see instead. ``ingest`` defines only this interface and the spec text
``HOOK:KIND[:key=value,...]``; the kinds (splice an SAE, add a direction, ablate, clamp, zero, mean) live in
``analysis.interventions``, which knows SAEs and probes, and the command layer hands the resolved
interventions to the job (docs/architecture.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from ingest.capture import capture, first_tensor
from ingest.hooks import HookPoint, resolve_hooks
from shards.errors import InterventionError
from shards.manifest import ModelInfo

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
    manifest's provenance. A protocol, not a base class: the kinds live in ``analysis``, which implements it
    without importing ``ingest`` (docs/architecture.md).
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


@runtime_checkable
class Resolver(Protocol):
    """Builds interventions from their specs (``analysis.interventions.build``), in two steps: ``check`` before
    the model loads (the spec's options and sources: a NaN scale, a pickled or non-numeric file, a missing SAE
    fail in seconds, not after a model load), then the call itself against the loaded model's hook."""

    def __call__(self, spec: InterventionSpec, ctx: ResolveContext) -> Intervention:
        """The intervention ``spec`` names, checked against the hook ``ctx`` describes."""

    def check(self, spec: InterventionSpec, storage: object = None) -> None:
        """Raise ``InterventionError`` if ``spec``'s options or sources are bad, without the model."""


def _replace_first(out, new: torch.Tensor):
    """``out`` with its first tensor replaced by ``new`` (module outputs are tensors, tuples or ModelOutputs)."""
    if isinstance(out, torch.Tensor):
        return new
    if isinstance(out, tuple):
        return (_replace_first(out[0], new), *out[1:])
    if isinstance(out, list):
        return [_replace_first(out[0], new), *out[1:]]
    if hasattr(out, "to_tuple"):  # transformers ModelOutput: its first field
        key = next(iter(out.keys()))
        out[key] = _replace_first(out[key], new)
        return out
    raise TypeError(f"cannot replace the output of type {type(out).__name__}")


def _checked(iv: Intervention, x: torch.Tensor) -> torch.Tensor:
    y = iv.apply(x)
    if y.shape != x.shape:
        raise RuntimeError(f"intervention {iv.kind} at {iv.hook.name} returned shape {tuple(y.shape)} "
                           f"for activations of shape {tuple(x.shape)}")
    return y.to(x.dtype)


@contextmanager
def intervening(model, interventions: list[Intervention]) -> Iterator[None]:
    """Apply ``interventions`` at their hooks for every forward pass inside the block.

    They are registered before any capture hook, so a hook captured where it is intervened on is stored as
    later layers see it (after the intervention)."""
    modules = dict(model.named_modules())
    handles = []

    def on_output(iv: Intervention):
        return lambda _m, _args, out: _replace_first(out, _checked(iv, first_tensor(out)))

    def on_input(iv: Intervention):
        return lambda _m, args: (_checked(iv, first_tensor(args)), *args[1:])

    try:
        for iv in interventions:
            mod = modules[iv.hook.module]
            handles.append(mod.register_forward_pre_hook(on_input(iv)) if iv.hook.read_input
                           else mod.register_forward_hook(on_output(iv)))
        yield
    finally:
        for h in handles:
            h.remove()


def _require_resolver(resolver: Resolver | None) -> Resolver:
    if resolver is None:
        raise InterventionError("--intervene needs the intervention kinds of the analysis layer: run it through "
                                "`actlake extract` (or pass a resolver to ingest.driver.run_extraction)")
    return resolver


def check_interventions(specs: list[str], resolver: Resolver | None, storage=None) -> None:
    """Every ``--intervene`` spec's text, options and sources checked before the model loads (``Resolver.check``);
    what needs the model (the hook, its width, the model an SAE was trained for) is checked when they are built."""
    if not specs:
        return
    resolver = _require_resolver(resolver)
    for text in specs:
        resolver.check(InterventionSpec.parse(text), storage)


def resolve_interventions(model, specs: list[str], probe_inputs: dict, resolver: Resolver | None,
                          storage=None, force: bool = False, model_info: ModelInfo | None = None
                          ) -> list[Intervention]:
    """Every ``--intervene`` spec built against the loaded model; errors (an unknown hook, a bad source, a
    wrong shape, an SAE of another model) before any work starts. ``probe_inputs``: one small model input, which
    tells each hook's per-token shape; ``model_info``: the model as the manifest records it, which the sources'
    records (an SAE's training data) must match."""
    if not specs:
        return []
    resolver = _require_resolver(resolver)
    parsed = []
    for text in specs:
        spec = InterventionSpec.parse(text)
        hooks = resolve_hooks(model, [spec.hook])  # an unknown hook: UnknownHookError naming the nearest
        if len(hooks) != 1:
            raise InterventionError(f"--intervene {text!r}: name one hook, not a pattern ({len(hooks)} matched)")
        parsed.append((spec, hooks[0]))
    with torch.inference_mode():
        acts = capture(model, list({h.name: h for _, h in parsed}.values()), probe_inputs)
    ndim = 2 if "input_ids" in probe_inputs else 1  # (batch, positions) or (batch,) lead every hook's shape
    built = [resolver(spec, ResolveContext(model, hp, tuple(acts[hp.name].shape[ndim:]), storage, force, model_info))
             for spec, hp in parsed]
    for spec, iv in zip(specs, built, strict=True):
        if not isinstance(iv, Intervention):
            raise TypeError(f"the resolver built {type(iv).__name__} for {spec!r}: not an Intervention")
    return built

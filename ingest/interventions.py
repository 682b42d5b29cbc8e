"""Interventions inside the forward pass: the interface the extraction actor applies, and how it applies them.

An intervention takes a hook's module output (or, for input hooks such as ``mlp_hidden.N``, the module's
input) and returns what later layers see instead. The interface (``Intervention``, ``InterventionSpec`` for the
spec text ``HOOK:KIND[:key=value,...]``, ``ResolveContext``, ``Resolver``) lives in ``shards.interventions``, where
``analysis`` may import it too; ``ingest`` applies interventions here. The kinds (splice an SAE, add a direction,
ablate, clamp, zero, mean) live in ``analysis.interventions``, which knows SAEs and probes, and the command layer
hands the resolver to the job (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ingest.capture import capture, first_tensor
from ingest.hooks import resolve_hooks
from shards.errors import InterventionError
from shards.interventions import Intervention, InterventionSpec, ResolveContext, Resolver
from shards.manifest import ModelInfo


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
                          storage=None, force: bool = False, model_info: ModelInfo | None = None,
                          positions: int | None = None) -> list[Intervention]:
    """Every ``--intervene`` spec built against the loaded model; errors (an unknown hook, a bad source, a
    wrong shape, an SAE of another model, a position no input reaches) before any work starts. ``probe_inputs``:
    one small model input, which tells each hook's per-token shape; ``model_info``: the model as the manifest
    records it, which the sources' records (an SAE's training data) must match; ``positions``: the most token
    positions an input has (``ResolveContext.positions``)."""
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
    built = [resolver(spec, ResolveContext(model, hp, tuple(acts[hp.name].shape[ndim:]), storage=storage, force=force,
                                           model_info=model_info, positions=positions)) for spec, hp in parsed]
    for spec, iv in zip(specs, built, strict=True):
        if not isinstance(iv, Intervention):
            raise TypeError(f"the resolver built {type(iv).__name__} for {spec!r}: not an Intervention")
    return built

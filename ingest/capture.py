"""Running a forward pass with hooks: capture several module outputs, stop after the last one."""

from __future__ import annotations

import torch

from ingest.hooks import HookPoint
from ingest.models import CALL_ATTR


class _StopForward(Exception):
    """Raised inside a hook once every requested activation is captured."""


def first_tensor(out):
    """The first tensor of a module output or input (a tensor, tuple, ModelOutput or dict)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    if hasattr(out, "to_tuple"):  # transformers ModelOutput
        return first_tensor(out.to_tuple()[0])
    if isinstance(out, dict):
        return first_tensor(next(iter(out.values())))
    raise TypeError(f"cannot find a tensor in a module output of type {type(out).__name__}")


def forward(model, inputs: dict):
    """One forward pass: keywords (``input_ids=``, ``pixel_values=``), or the pixels as the one positional
    argument for a module a factory marked so (``ingest.models.VisionModelSpec``)."""
    if getattr(model, CALL_ATTR, None) == "positional":
        return model(*inputs.values())
    return model(**inputs)


@torch.inference_mode()
def capture(model, hooks: list[HookPoint], inputs: dict, stop_early: bool = True) -> dict[str, torch.Tensor]:
    """Activations of ``hooks`` for one batch, as produced by the model (no copy, no cast).

    The forward stops as soon as the last hooked module has fired, so later
    layers are never computed.
    """
    return capture_with_output(model, hooks, inputs, stop_early)[0]


@torch.inference_mode()
def capture_with_output(model, hooks: list[HookPoint], inputs: dict,
                        stop_early: bool = True) -> tuple[dict[str, torch.Tensor], object]:
    """``capture``, and the model's output when the forward ran to the end (None when it stopped early)."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def make(hp: HookPoint):
        def on_output(_module, _args, output):
            captured[hp.name] = first_tensor(output)
            if stop_early and len(captured) == len(hooks):
                raise _StopForward

        def on_input(_module, args):
            captured[hp.name] = first_tensor(args)
            if stop_early and len(captured) == len(hooks):
                raise _StopForward

        return on_input, on_output

    try:
        for hp in hooks:
            on_input, on_output = make(hp)
            mod = modules[hp.module]
            handles.append(mod.register_forward_pre_hook(on_input) if hp.read_input
                           else mod.register_forward_hook(on_output))
        output = None
        try:
            output = forward(model, inputs)
        except _StopForward:
            pass
    finally:
        for h in handles:
            h.remove()
    missing = [hp.name for hp in hooks if hp.name not in captured]
    if missing:
        raise RuntimeError(f"hooks {missing} never fired during the forward pass")
    return captured, output

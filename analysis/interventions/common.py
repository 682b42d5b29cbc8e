"""What the intervention kinds share: applying a change from a position on, and describing the intervention."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch

from shards.errors import InterventionError

if TYPE_CHECKING:
    from shards.interventions import HookPoint


def require_finite(name: str, value: float) -> None:
    """An option that multiplies or replaces activations: NaN or ±inf would turn every later layer into NaN."""
    if not math.isfinite(value):
        raise InterventionError(f"option {name}={value} is not a finite number; give one such as {name}=4")


#: the largest entry a vector added to activations may have: its square must stay below float32's largest value
#: (3.4e38), or the next layer norm (a mean of squares) is infinite and every later activation NaN
MAX_ADDED = math.sqrt(torch.finfo(torch.float32).max)


def require_moderate(what: str, delta: torch.Tensor, fix: str) -> None:
    """Refuse, before any work, a vector added to activations that makes every later value NaN or infinite (the
    job would otherwise fail on its first unit with advice about the stored dtype, which is not the cause)."""
    largest = float(delta.double().abs().max()) if delta.numel() else 0.0
    if not largest < MAX_ADDED:
        raise InterventionError(f"{what} adds values up to {largest:.3g} to the activations: beyond {MAX_ADDED:.3g} "
                                "their squares overflow float32 in the model's next normalisation, so every later "
                                f"activation would be NaN or infinite. {fix}")


def require_position(value: int | None) -> None:
    """``from_position`` counts tokens from 0."""
    if value is not None and value < 0:
        raise InterventionError(f"option from_position={value} is negative; give 0 (every position) or more")


def from_position(x: torch.Tensor, changed: torch.Tensor, shape: tuple[int, ...], position: int) -> torch.Tensor:
    """``changed`` at positions >= ``position`` and ``x`` before them; tensors without a position axis (images,
    pooled inputs) are changed everywhere."""
    if position <= 0 or x.ndim != len(shape) + 2:
        return changed
    out = x.clone()
    out[:, position:] = changed[:, position:]
    return out


def describe(hook: HookPoint, kind: str, options, sources: dict[str, dict]) -> dict:
    """The identity of an intervention: its hook, kind and options, each source option replaced by what
    identifies the source (URI as displayed, checksum, dataset id), so a changed file makes another job."""
    opts = {k: v for k, v in dataclasses.asdict(options).items() if k not in sources}
    return {"hook": hook.name, "module": hook.module, "kind": kind, "options": opts, "sources": sources}


def flat_rows(x: torch.Tensor, width: int) -> torch.Tensor:
    """The activations as (rows, width) float32 (a row per token or image)."""
    return x.reshape(-1, width).float()

"""What the intervention kinds share: applying a change from a position on, and describing the intervention."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ingest.hooks import HookPoint



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

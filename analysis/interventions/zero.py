"""``zero``: the hook's activations replaced by zeros (the reference of "CE loss recovered")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from analysis.interventions.common import describe, from_position, require_position
from analysis.interventions.registry import InterventionKind, register

if TYPE_CHECKING:
    from shards.interventions import ResolveContext


@dataclass
class ZeroOptions:
    from_position: int = 0
    """Zero positions >= P only."""

    def __post_init__(self) -> None:
        require_position(self.from_position)


class Zero:
    kind = "zero"

    def __init__(self, ctx: ResolveContext, options: ZeroOptions) -> None:
        self.hook, self.options, self.shape = ctx.hook, options, ctx.shape

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return from_position(x, torch.zeros_like(x), self.shape, self.options.from_position)

    def identity(self) -> dict:
        return describe(self.hook, self.kind, self.options, {})


ZERO = register(InterventionKind("zero", ZeroOptions, Zero, "[from_position=P]"))

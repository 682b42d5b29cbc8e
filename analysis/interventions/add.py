"""``add``: steering, x + scale * direction at every position or from a position on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from analysis.interventions.common import (
    describe,
    from_position,
    require_finite,
    require_moderate,
    require_position,
)
from analysis.interventions.registry import InterventionKind, register
from analysis.interventions.sources import check_direction, direction_source
from shards.errors import InterventionError

if TYPE_CHECKING:
    from shards.interventions import ResolveContext


@dataclass
class AddOptions:
    direction: str
    """FILE.npy, FILE.safetensors[#TENSOR], a probe run RUN#CLASS, or an SAE latent SAE_RUN#I."""
    scale: float = 1.0
    """alpha: how much of the direction is added."""
    from_position: int = 0
    """Add at positions >= P only (0: every position)."""
    normalize: bool = False
    """Scale the direction to unit norm first (scale is then in activation-norm units)."""

    def __post_init__(self) -> None:
        require_finite("scale", self.scale)
        require_position(self.from_position)


class Add:
    kind = "add"

    def __init__(self, ctx: ResolveContext, options: AddOptions) -> None:
        rows, self.source = direction_source(options.direction, ctx)
        if len(rows) != 1:
            raise InterventionError(f"add takes one direction; {options.direction!r} gives {len(rows)} (pick one: "
                                    "RUN#CLASS, FILE#TENSOR, SAE_RUN#I)")
        v = rows[0] / rows[0].double().norm().float() if options.normalize else rows[0]  # not zero: sources check
        self.hook, self.options, self.shape = ctx.hook, options, ctx.shape
        self.delta = (options.scale * v).reshape(ctx.shape)
        unit = " (normalize=true: scale is the norm added)" if options.normalize else ""
        require_moderate(f"scale={options.scale:g} x the direction {options.direction!r}", self.delta,
                         f"Lower scale{unit}, or use a direction of ordinary size.")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        # in the activations' own dtype: scale = 0 gives x back bit for bit
        return from_position(x, x + self.delta.to(x.device, x.dtype), self.shape, self.options.from_position)

    def identity(self) -> dict:
        return describe(self.hook, self.kind, self.options, {"direction": self.source})


ADD = register(InterventionKind("add", AddOptions, Add, "direction=SRC[,scale=A,from_position=P,normalize=true]",
                                lambda options, storage: check_direction(options.direction, storage)))

"""``ablate``: directional ablation / concept erasure, x minus its projection on a direction or a k-dim
subspace (the rows' span, orthonormalised)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from analysis.interventions.common import describe, flat_rows, from_position, require_position
from analysis.interventions.registry import InterventionKind, register
from analysis.interventions.sources import check_direction, direction_source, width

if TYPE_CHECKING:
    from shards.interventions import ResolveContext


@dataclass
class AblateOptions:
    direction: str
    """One direction or k rows (e.g. a probe run's RUN#diffmean: every class's diff in means)."""
    from_position: int = 0
    """Ablate at positions >= P only (0: every position)."""

    def __post_init__(self) -> None:
        require_position(self.from_position)


def orthonormal_basis(rows: torch.Tensor) -> torch.Tensor:
    """(width, r) orthonormal columns spanning ``rows`` (r = their rank; near-dependent rows dropped)."""
    q, r = torch.linalg.qr(rows.double().t())
    # float32 sources: rows dependent up to float32 rounding (class diff-in-means sum to zero) are one direction
    keep = r.diagonal().abs() > 1e-5 * r.diagonal().abs().max().clamp_min(1e-30)
    return q[:, keep].float()


class Ablate:
    kind = "ablate"

    def __init__(self, ctx: ResolveContext, options: AblateOptions) -> None:
        rows, self.source = direction_source(options.direction, ctx)  # no zero rows: sources refuse them
        self.hook, self.options, self.shape, self.width = ctx.hook, options, ctx.shape, width(ctx)
        self.basis = orthonormal_basis(rows)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        flat = flat_rows(x, self.width)
        q = self.basis.to(flat.device)
        out = (flat - (flat @ q) @ q.t()).reshape(x.shape)
        return from_position(x, out, self.shape, self.options.from_position)

    def identity(self) -> dict:
        return {**describe(self.hook, self.kind, self.options, {"direction": self.source}),
                "rank": int(self.basis.shape[1])}


ABLATE = register(InterventionKind("ablate", AblateOptions, Ablate, "direction=SRC[,from_position=P]",
                                   lambda options, storage: check_direction(options.direction, storage)))

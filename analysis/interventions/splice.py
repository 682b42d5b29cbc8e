"""``splice``: the hook's output replaced by an SAE's reconstruction (optionally plus the SAE's error term, which
gives back the clean output: a check that splicing itself changes nothing)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from analysis.interventions.common import describe, flat_rows, from_position, require_position
from analysis.interventions.registry import InterventionKind, register
from analysis.interventions.sources import check_sae, sae_source, width
from analysis.sae.io import rows_min_position

if TYPE_CHECKING:
    from shards.interventions import ResolveContext


@dataclass
class SpliceOptions:
    sae: str
    """The SAE: an `actlake sae train` output or any SAELens-layout directory (cfg.json + sae_weights)."""
    keep_error: bool = False
    """Add back the SAE's error term x - x_hat (the output equals the clean one to float tolerance)."""
    from_position: int | None = None
    """Splice at positions >= P only (default: the SAE's own `sae train --min-position`, the rows it was trained
    on; 0: every position, even those it never saw)."""

    def __post_init__(self) -> None:
        require_position(self.from_position)


class Splice:
    kind = "splice"

    def __init__(self, ctx: ResolveContext, options: SpliceOptions) -> None:
        self.hook, self.options, self.shape, self.width = ctx.hook, options, ctx.shape, width(ctx)
        self.sae, self.source = sae_source(options.sae, ctx)
        # rows the SAE was not trained on (an attention sink) stay as they are unless from_position says otherwise
        self.options = dataclasses.replace(options, from_position=rows_min_position(self.sae, options.from_position))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        flat = flat_rows(x, self.width)
        sae = self.sae.to(flat.device)
        recon = sae.decode(sae.encode(flat))
        out = recon + (flat - recon) if self.options.keep_error else recon
        return from_position(x, out.reshape(x.shape), self.shape, self.options.from_position)

    def identity(self) -> dict:
        return describe(self.hook, self.kind, self.options, {"sae": self.source})


SPLICE = register(InterventionKind("splice", SpliceOptions, Splice, "sae=RUN[,keep_error=true,from_position=P]",
                                   lambda options, storage: check_sae(options.sae, storage)))

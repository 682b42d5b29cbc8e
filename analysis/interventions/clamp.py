"""``clamp``: SAE latents set to fixed values, delta-style: x + (z' - z) W_dec, so the SAE's reconstruction
error stays in and only the clamped latents change what later layers see."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from analysis.interventions.common import describe, flat_rows, from_position, require_finite, require_position
from analysis.interventions.registry import InterventionKind, register
from analysis.interventions.sources import check_sae, parse_latents, sae_source, width
from analysis.sae.io import rows_min_position

if TYPE_CHECKING:
    from shards.interventions import ResolveContext


@dataclass
class ClampOptions:
    sae: str
    """The SAE whose latents are clamped."""
    latent: str
    """Latent id(s): I or I+J+..."""
    value: float = 0.0
    """The value the latents are set to (0: ablate them)."""
    from_position: int | None = None
    """Clamp at positions >= P only (default: the SAE's own `sae train --min-position`, the rows it was trained
    on; 0: every position)."""

    def __post_init__(self) -> None:
        require_finite("value", self.value)
        require_position(self.from_position)


class Clamp:
    kind = "clamp"

    def __init__(self, ctx: ResolveContext, options: ClampOptions) -> None:
        self.hook, self.options, self.shape, self.width = ctx.hook, options, ctx.shape, width(ctx)
        self.sae, self.source = sae_source(options.sae, ctx)
        self.latents = parse_latents(options.latent, self.sae.d_sae, f"clamp latent={options.latent}")
        # the SAE's encoder means nothing on rows it was not trained on (an attention sink): left as they are
        self.options = dataclasses.replace(options, from_position=rows_min_position(self.sae, options.from_position))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        flat = flat_rows(x, self.width)
        sae = self.sae.to(flat.device)
        z = sae.encode(flat)[:, self.latents]
        out = (flat + (self.options.value - z) @ sae.W_dec[self.latents]).reshape(x.shape)
        return from_position(x, out, self.shape, self.options.from_position)

    def identity(self) -> dict:
        return describe(self.hook, self.kind, self.options, {"sae": self.source})


CLAMP = register(InterventionKind("clamp", ClampOptions, Clamp, "sae=RUN,latent=I[+J],value=V[,from_position=P]",
                                  lambda options, storage: check_sae(options.sae, storage)))

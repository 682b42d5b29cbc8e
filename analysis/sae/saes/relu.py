"""The standard SAE: ReLU latents with an L1 penalty weighted by decoder norms (Bricken et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.sae.base import SaeOutput, SparseAutoencoder
from analysis.sae.registry import Architecture, register


@dataclass
class ReluOptions:
    l1_coeff: float = 1.0
    """relu: weight of the L1 penalty (on latents times decoder norms, inputs at mean norm sqrt(d))."""


class ReluSAE(SparseAutoencoder):
    arch = "relu"
    saelens_arch = "standard"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def loss_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"l1": self.options.l1_coeff * (out.latents * self.W_dec.norm(dim=1)).sum(-1).mean()}


register(Architecture("relu", ReluSAE, ReluOptions, aliases=("standard", "l1")))

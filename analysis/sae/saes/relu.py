"""The standard SAE: ReLU latents with an L1 penalty weighted by decoder norms (Bricken et al. 2023)."""

from __future__ import annotations

import torch

from analysis.sae.base import SparseAutoencoder


class ReluSAE(SparseAutoencoder):
    arch = "relu"
    saelens_arch = "standard"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        coeff = float(self.options.get("l1_coeff", 1.0))
        return coeff * (z * self.W_dec.norm(dim=1)).sum(-1).mean()

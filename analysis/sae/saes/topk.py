"""TopK SAE (Gao et al. 2024): exactly k active latents per row."""

from __future__ import annotations

import torch

from analysis.sae.base import SparseAutoencoder, topk_mask


class TopKSAE(SparseAutoencoder):
    arch = "topk"
    saelens_arch = "topk"
    k_sparse = True

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return topk_mask(pre, self.k)

    def export_cfg(self) -> dict:
        return {"architecture": "topk", "k": self.k}

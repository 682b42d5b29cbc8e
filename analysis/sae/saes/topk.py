"""TopK SAE (Gao et al. 2024): exactly k active latents per row."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.sae.base import AuxKOptions, SaeOutput, SparseAutoencoder, topk_mask
from analysis.sae.registry import Architecture, register


@dataclass
class TopKOptions(AuxKOptions):
    """TopK's options: AuxK's."""


class TopKSAE(SparseAutoencoder):
    arch = "topk"
    saelens_arch = "topk"
    k_sparse = True

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return topk_mask(pre, self.k)

    def forward(self, x: torch.Tensor) -> SaeOutput:
        # training path: only the k active latents are kept (no dense (batch, d_sae) tensor), decoded sparsely
        with torch.no_grad():  # the dense pre-activations need no graph: only the k chosen get gradients
            pre = self.pre_acts(x)
            vals, idx = pre.topk(self.k, dim=-1, sorted=False)  # unsorted: the order is irrelevant
        vals = torch.relu(self.gathered_pre_acts(x, idx, vals))
        return SaeOutput(self.sparse_decode(vals, idx), None, pre=pre, top_vals=vals, top_idx=idx)

    def loss_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.auxk_terms(x, out, dead)

    def export_cfg(self) -> dict:
        return {"architecture": "topk", "k": self.k}


register(Architecture("topk", TopKSAE, TopKOptions))

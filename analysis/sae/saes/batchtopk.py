"""BatchTopK SAE (Bussmann et al. 2024): the top k x batch activations of the whole batch during training;
at inference a per-model threshold learnt as a running mean of the smallest kept activation, so it is
exported as a JumpReLU (as SAELens does)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.sae.base import AuxKOptions, SaeOutput, SparseAutoencoder
from analysis.sae.registry import Architecture, register


@dataclass
class BatchTopKOptions(AuxKOptions):
    """BatchTopK's options: AuxK's."""


class BatchTopKSAE(SparseAutoencoder):
    arch = "batchtopk"
    saelens_arch = "jumprelu"
    k_sparse = True

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, options=None) -> None:
        super().__init__(d_in, d_sae, k, seed, options)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_steps", torch.zeros((), dtype=torch.long))

    def batch_topk(self, pre: torch.Tensor) -> torch.Tensor:
        acts = torch.relu(pre)
        flat = acts.flatten()
        vals, idx = flat.topk(min(self.k * pre.shape[0], flat.numel()))
        z = torch.zeros_like(flat).scatter_(0, idx, vals).view_as(acts)
        if self.training:
            with torch.no_grad():
                kept = vals[vals > 0]
                if kept.numel():
                    m = self.threshold_steps.clamp(max=999).to(kept.dtype)
                    self.threshold.copy_((self.threshold * m + kept.min()) / (m + 1))
                    self.threshold_steps += 1
        return z

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.batch_topk(pre)
        return pre * (pre > self.threshold)  # JumpReLU with one threshold, the same for every latent

    def loss_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.auxk_terms(x, out, dead)

    def export_tensors(self) -> dict[str, torch.Tensor]:
        out = super().export_tensors()
        out["threshold"] = self.threshold.detach().float().expand(self.d_sae).contiguous()
        return out


register(Architecture("batchtopk", BatchTopKSAE, BatchTopKOptions, aliases=("batch_topk",)))

"""Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024) on BatchTopK: every nested prefix of the dictionary
(the first m_1 < m_2 < ... < d_sae latents) must reconstruct the input on its own; the loss sums the
prefixes' reconstruction errors, so early latents learn general features."""

from __future__ import annotations

import torch

from analysis.sae.base import SaeOutput
from analysis.sae.saes.batchtopk import BatchTopKSAE


def default_prefixes(d_sae: int) -> list[int]:
    sizes = [d_sae // 16, d_sae // 8, d_sae // 4, d_sae // 2, d_sae]
    return sorted({s for s in sizes if s > 0})


class MatryoshkaSAE(BatchTopKSAE):
    arch = "matryoshka"
    saelens_arch = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, **options) -> None:
        super().__init__(d_in, d_sae, k, seed, **options)
        prefixes = options.get("prefixes") or default_prefixes(d_sae)
        prefixes = sorted({int(p) for p in prefixes} | {d_sae})
        if prefixes[0] <= 0 or prefixes[-1] > d_sae:
            raise ValueError(f"Matryoshka prefixes must lie in 1..{d_sae}; got {prefixes}")
        self.prefixes = prefixes

    def forward(self, x: torch.Tensor) -> SaeOutput:
        pre = self.pre_acts(x)
        z = self.activation(pre)
        recon = self.decode(z)
        if not self.training:
            return SaeOutput(recon, z, z.new_zeros(()), pre=pre)
        extra = z.new_zeros(())
        for m in self.prefixes[:-1]:  # the full dictionary's error is the main loss
            part = z[:, :m] @ self.W_dec[:m] + self.b_dec
            extra = extra + (part - x).pow(2).sum(-1).mean()
        return SaeOutput(recon, z, z.new_zeros(()), extra, pre=pre)

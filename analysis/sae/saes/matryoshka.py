"""Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024) on BatchTopK: every nested prefix of the dictionary
(the first m_1 < m_2 < ... < d_sae latents) must reconstruct the input on its own; the loss sums the
prefixes' reconstruction errors, so early latents learn general features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from simple_parsing import field

from analysis.sae.base import AuxKOptions, SaeOutput
from analysis.sae.registry import Architecture, register
from analysis.sae.saes.batchtopk import BatchTopKSAE
from shards.config import split_list


@dataclass
class MatryoshkaOptions(AuxKOptions):
    prefixes: list[int] = field(default_factory=list, nargs="*", type=str, metavar="N[,N...]")
    """matryoshka: nested dictionary sizes (default d_sae/16, /8, /4, /2, d_sae)."""

    def __post_init__(self) -> None:
        self.prefixes = split_list(self.prefixes, int)


def default_prefixes(d_sae: int) -> list[int]:
    return sorted({s for s in (d_sae // 16, d_sae // 8, d_sae // 4, d_sae // 2, d_sae) if s > 0})


class MatryoshkaSAE(BatchTopKSAE):
    arch = "matryoshka"
    saelens_arch = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, options=None) -> None:
        super().__init__(d_in, d_sae, k, seed, options or MatryoshkaOptions())
        prefixes = sorted({int(p) for p in (self.options.prefixes or default_prefixes(d_sae))} | {d_sae})
        if prefixes[0] <= 0 or prefixes[-1] > d_sae:
            raise ValueError(f"Matryoshka prefixes must lie in 1..{d_sae}; got {prefixes}")
        self.prefixes = prefixes

    def loss_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        z, prefix = out.latents, x.new_zeros(())
        target = x if out.target is None else out.target
        if self.W_skip is not None:  # a skip transcoder: the prefixes reconstruct what the skip leaves
            target = target - x @ self.W_skip
        for m in self.prefixes[:-1]:  # the full dictionary's error is the main loss
            prefix = prefix + (z[:, :m] @ self.W_dec[:m] + self.b_dec - target).pow(2).sum(-1).mean()
        return {"prefix": prefix, **self.auxk_terms(x, out, dead)}


register(Architecture("matryoshka", MatryoshkaSAE, MatryoshkaOptions, aliases=("matryoshka_batchtopk",)))

"""Matching-pursuit SAE (Costa et al. 2025, "From Flat to Hierarchical: Extracting Sparse Representations
with Matching Pursuit"): the encoder is k greedy steps over the (unit-norm) decoder atoms: pick the atom
most aligned with the residual, take its coefficient, subtract its contribution, repeat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.sae.base import AuxKOptions, SaeOutput, SparseAutoencoder
from analysis.sae.registry import Architecture, register


@dataclass
class MatchingPursuitOptions(AuxKOptions):
    """MP's options: AuxK's."""


class MatchingPursuitSAE(SparseAutoencoder):
    transcodes = False  #: its encoder is its decoder: input and output must be one space
    arch = "mp"
    saelens_arch = None  # no SAELens inference class: loadable by actlake only
    k_sparse = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        r = x - self.b_dec
        z = torch.zeros(x.shape[0], self.d_sae, dtype=x.dtype, device=x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.k):
            scores = r @ self.W_dec.t()
            best = scores.argmax(-1)  # non-negative MP: the most positively aligned atom
            coef = torch.relu(scores[rows, best])
            z = z.index_put((rows, best), coef, accumulate=True)
            r = r - coef.unsqueeze(1) * self.W_dec[best]
        return z

    def activation(self, pre: torch.Tensor) -> torch.Tensor:  # pragma: no cover - encode is overridden
        raise RuntimeError("the MP-SAE encodes by matching pursuit, not by an activation of pre-acts")

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_dec.t()  # atom alignments (used by AuxK)

    def forward(self, x: torch.Tensor) -> SaeOutput:
        z = self.encode(x)
        return SaeOutput(self.decode(z), z)

    def loss_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.auxk_terms(x, out, dead)

    def export_tensors(self) -> dict[str, torch.Tensor]:
        out = super().export_tensors()
        out["W_enc"] = self.W_dec.detach().t().float().contiguous()  # tied: the encoder is the decoder
        return out

    def export_cfg(self) -> dict:
        return {"architecture": "mp", "k": self.k}

    @torch.no_grad()
    def fold_input_scale(self, scale: float, out_scale: float | None = None) -> None:
        # atoms stay unit-norm (selection depends on it): only the bias and the latents' units change
        self.b_dec /= scale


register(Architecture("mp", MatchingPursuitSAE, MatchingPursuitOptions, aliases=("matching_pursuit", "mp_sae")))

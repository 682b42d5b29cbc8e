"""Semi-NMF of MLP activations (Shafran, Geiger & Geva 2025, "Decomposing MLP Activations into
Interpretable Features via Semi-Nonnegative Matrix Factorization"), streamed.

Rows are tokens: ``A ≈ Y Z`` with ``Z = W_dec`` (d_sae × d_mlp, any sign: each feature a combination of
neurons, rows at unit norm) and coefficients ``Y ≥ 0`` (tokens × d_sae), i.e. the paper's
``A ≈ Z·Y`` transposed. Winner-take-all sparsity: a token's coefficients live on the ``k`` features whose
atoms align best with it; the rest are exactly 0.

A batch alternates the two half-steps of semi-NMF (Ding, Li & Jordan 2010):

- **Y-step** (no gradient): start from the winners' alignments and apply ``--snmf-iters`` multiplicative
  updates ``Y ← Y ⊙ sqrt(([AZᵀ]⁺ + Y[ZZᵀ]⁻) / ([AZᵀ]⁻ + Y[ZZᵀ]⁺))`` on the winners only. Each update keeps
  Y ≥ 0 and does not raise the error; zeros stay zero, so the winner-take-all support is kept.
- **Z-step**: a gradient step on ``‖A − YZ‖²`` over Z (the trainer's Adam), instead of the closed form
  ``Z = (YᵀY)⁻¹YᵀA`` over all rows, which a stream never holds.

No bias (semi-NMF has none: ``b_dec`` stays 0). ``W_enc`` is exported as ``Zᵀ`` (the winners' scores).
The features in the residual stream are ``W_out @ z`` for the block's MLP output projection
(``analysis.sae.base.residual_directions``; ``sae train`` writes them when ``actlake extract --save-weights``
stored the projection with the dataset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.sae.base import AuxKOptions, SaeOutput, SparseAutoencoder
from analysis.sae.registry import Architecture, register

_EPS = 1e-12


@dataclass
class SnmfOptions(AuxKOptions):
    """Semi-NMF's options (and AuxK's, which revives features that stop winning)."""

    snmf_iters: int = 10
    """snmf: multiplicative updates of each batch's coefficients Y (on the k winners)."""


class SemiNMF(SparseAutoencoder):
    transcodes = False  #: its encoder is its decoder: input and output must be one space
    arch = "snmf"
    saelens_arch = None  # no SAELens inference class: loadable by actlake only
    k_sparse = True
    uses_b_dec = False  #: semi-NMF has no bias: the trainer leaves b_dec at 0

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, options=None) -> None:
        super().__init__(d_in, d_sae, k, seed, options)
        self.b_dec.requires_grad_(False)
        self.b_enc.requires_grad_(False)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_dec.t()  # each atom's alignment with the row: A Zᵀ (also AuxK's scores)

    @torch.no_grad()
    def coefficients(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, ids) of each row's non-negative coefficients on its ``k`` winning atoms (the Y-step)."""
        top, idx = scores.topk(self.k, dim=-1)
        z = self.W_dec.detach()
        gram = z @ z.t()  # Z Zᵀ (d_sae²): gathered per row on the winners below
        g = gram[idx.unsqueeze(2), idx.unsqueeze(1)]  # (n, k, k)
        g_pos, g_neg = g.clamp_min(0), (-g).clamp_min(0)
        a_pos, a_neg = top.clamp_min(0), (-top).clamp_min(0)
        y = a_pos.clone()  # unit-norm atoms: the alignment is the one-atom least-squares coefficient
        y[y.sum(1) == 0] = 1e-3  # a row no atom aligns with still starts inside the cone
        for _ in range(self.options.snmf_iters if self.options is not None else 10):
            num = a_pos + torch.bmm(y.unsqueeze(1), g_neg).squeeze(1)
            den = a_neg + torch.bmm(y.unsqueeze(1), g_pos).squeeze(1)
            y = y * torch.sqrt(num / den.clamp_min(_EPS))
        return y, idx

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        vals, idx = self.coefficients(self.pre_acts(x))
        return torch.zeros(x.shape[0], self.d_sae, dtype=x.dtype, device=x.device).scatter_(-1, idx, vals)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:  # pragma: no cover - encode is overridden
        raise RuntimeError("semi-NMF solves its coefficients by multiplicative updates, not by an activation")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec

    def forward(self, x: torch.Tensor) -> SaeOutput:
        pre = self.pre_acts(x)
        vals, idx = self.coefficients(pre.detach())
        # the Z-step: gradients reach W_dec through the decode only (Y is this batch's fixed solution)
        return SaeOutput(self.sparse_decode(vals, idx, bias=False), None, pre=pre.detach(), top_vals=vals,
                         top_idx=idx)

    def loss_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.auxk_terms(x, out, dead)

    def export_tensors(self) -> dict[str, torch.Tensor]:
        out = super().export_tensors()
        out["W_enc"] = self.W_dec.detach().t().float().contiguous()  # the winners are chosen by A Zᵀ
        return out

    def export_cfg(self) -> dict:
        return {"architecture": "snmf", "k": self.k}

    @torch.no_grad()
    def fold_input_scale(self, scale: float, out_scale: float | None = None) -> None:
        # atoms stay unit-norm (the winners depend on it); Y is solved per row, so raw inputs just give
        # coefficients in raw units: nothing to fold
        self.W_enc.copy_(self.W_dec.t())


register(Architecture("snmf", SemiNMF, SnmfOptions, aliases=("semi_nmf", "seminmf")))

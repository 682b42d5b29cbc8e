"""What every SAE shares: the weights in SAELens' layout, encode/decode, unit-norm decoder rows, AuxK."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AuxKOptions:
    """The AuxK loss of k-sparse architectures (Gao et al. 2024): dead latents reconstruct the error."""

    auxk_coeff: float = 0.0
    """topk, batchtopk, matryoshka, mp, snmf: weight of the AuxK loss (0: off, as sparsify's default; measured
    at 2M tokens: 1/32 cost 65 percent more time per step for the same FVU, docs/benchmarks.md; 1/32 is Gao et
    al.'s value for long runs where dead latents pile up)."""

    k_aux: int = 0
    """topk, batchtopk, matryoshka, mp: dead latents used by AuxK (0: d_in / 2)."""


@dataclass
class SaeOutput:
    """One forward pass: reconstruction, latents, pre-activations."""

    recon: torch.Tensor
    latents: torch.Tensor | None  #: dense (batch, d_sae), zeros where inactive; None when only top_* are kept
    pre: torch.Tensor | None = None  #: pre-activations, reused by AuxK
    top_vals: torch.Tensor | None = None  #: (batch, k) active values, for exactly-k architectures
    top_idx: torch.Tensor | None = None  #: (batch, k) their latent ids
    target: torch.Tensor | None = None  #: what ``recon`` should match when it is not the input (transcoders)

    def active_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(number of active latents in the batch, per-latent "fired at least once" as bool (d_sae,))."""
        if self.latents is not None:
            active = self.latents != 0
            return active.sum(), active.any(0)
        on = self.top_vals != 0
        fired = torch.zeros(self.pre.shape[-1], dtype=torch.bool, device=on.device)
        fired[self.top_idx[on]] = True
        return on.sum(), fired


class EncoderPreActs(torch.autograd.Function):
    """``(x - b_dec) @ W_enc + b_enc`` for inputs that need no gradient (training batches).

    Autograd would compute the input's full gradient ``G @ W_encᵀ`` (batch × d_sae × d_in: a third of a
    TopK step's matmul time) only to sum it over rows for ``b_dec``; here ``b_dec``'s gradient is
    ``-(Σ_rows G) @ W_encᵀ``, a vector-matrix product. Measured in docs/benchmarks.md (SAE defaults).
    """

    @staticmethod
    def forward(ctx, x, b_dec, w_enc, b_enc):  # noqa: D102 - autograd's API
        centred = x - b_dec
        ctx.save_for_backward(centred, w_enc)
        return torch.addmm(b_enc, centred, w_enc)  # fused bias: one pass over (batch, d_sae)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102 - autograd's API
        centred, w_enc = ctx.saved_tensors
        col = grad.sum(0)
        g_bdec = -(w_enc @ col) if ctx.needs_input_grad[1] else None
        g_w = centred.t() @ grad if ctx.needs_input_grad[2] else None
        return None, g_bdec, g_w, col if ctx.needs_input_grad[3] else None


class GatheredPreActs(torch.autograd.Function):
    """Pre-activations at chosen latents only, ``vals[i, j] = pre[i, idx[i, j]]`` (computed without a graph),
    with their gradients: for k-sparse SAEs only the chosen entries of the (batch × d_sae) pre-activations
    receive gradient, so ``W_enc``'s gradient is a sparse (CSR, d_sae × batch, k per row of the batch) times
    dense product instead of a dense matmul over mostly zeros (a TopK step 1.9-2.1x faster at d_sae = 8 d_in:
    tests/benchmarks/bench_sae_step.py, docs/benchmarks.md), as sparsify's fused encoder does on GPU.
    """

    @staticmethod
    def forward(ctx, x, b_dec, w_enc, b_enc, idx, vals):  # noqa: D102 - autograd's API
        ctx.save_for_backward(x, b_dec, w_enc, idx)
        return vals.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102 - autograd's API
        x, b_dec, w_enc, idx = ctx.saved_tensors
        n, k = idx.shape
        d_sae = w_enc.shape[1]
        flat, g = idx.reshape(-1), grad.reshape(-1)
        col = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(0, flat, g)  # Σ_rows G
        g_w = None
        if ctx.needs_input_grad[2]:
            order = torch.argsort(flat, stable=True)  # entries grouped by latent: the CSR rows of Gᵀ
            crow = torch.zeros(d_sae + 1, dtype=torch.int64, device=grad.device)
            crow[1:] = torch.bincount(flat, minlength=d_sae).cumsum(0)
            with warnings.catch_warnings():  # "CSR support is in beta": measured and tested here, not news
                warnings.simplefilter("ignore", UserWarning)
                gt = torch.sparse_csr_tensor(crow, order // k, g[order], (d_sae, n))
                g_w = (gt @ (x - b_dec)).t()
        g_bdec = -(w_enc @ col) if ctx.needs_input_grad[1] else None
        return None, g_bdec, g_w, col if ctx.needs_input_grad[3] else None, None, None


class SparseAutoencoder(nn.Module):
    """x -> z = f((x - b_dec) W_enc + b_enc) -> x_hat = z W_dec + b_dec, with W_dec rows at unit norm.

    ``W_enc`` is (d_in, d_sae) and ``W_dec`` (d_sae, d_in), as SAELens stores them. Subclasses define
    ``activation(pre_acts)``, their ``loss_terms`` and the SAELens architecture name; ``options`` is the
    architecture's options dataclass.
    """

    arch: str = "base"
    saelens_arch: str | None = None  #: how SAELens calls it (None: SAELens has no inference class for it)
    k_sparse: bool = False  #: exactly-k (TopK family)
    uses_b_dec: bool = True  #: False: the model has no bias (b_dec stays 0, not initialised from the data)
    transcodes: bool = True  #: False: the architecture cannot map one hook to another (--target-hook refused)

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, options=None) -> None:
        super().__init__()
        if d_sae <= 0 or d_in <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got {d_in}, {d_sae}")
        self.d_in, self.d_sae, self.k, self.options = d_in, d_sae, k, options
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(d_sae, d_in, generator=gen)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.t().contiguous())  # the encoder starts as the decoder's transpose
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.d_out, self.transcoder, self.W_skip = d_in, False, None

    def make_transcoder(self, d_out: int, skip: bool = False, seed: int = 0) -> None:
        """Turn this SAE into a transcoder: it reads ``d_in``-dim inputs and writes ``d_out``-dim targets
        (another hook: an MLP's input to its output), as sparsify's and SAELens' transcoders do. The decoder and
        its bias move to the output space, the input is no longer centred by ``b_dec`` (it lives elsewhere), and
        ``skip`` adds a linear skip connection ``x @ W_skip`` (sparsify's ``skip_connection``; starts at 0)."""
        gen = torch.Generator().manual_seed(seed + 1)
        w = torch.randn(self.d_sae, d_out, generator=gen)
        self.W_dec = nn.Parameter(w / w.norm(dim=1, keepdim=True))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.register_buffer("b_in", torch.zeros(self.d_in))
        self.d_out, self.transcoder = d_out, True
        self.W_skip = nn.Parameter(torch.zeros(self.d_in, d_out)) if skip else None

    def input_bias(self) -> torch.Tensor:
        """What the encoder subtracts from its input: ``b_dec`` for an SAE, nothing (zeros) for a transcoder."""
        return self.b_in if self.transcoder else self.b_dec

    # --- the model --------------------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:  # rare (attribution through the SAE): plain autograd
            return torch.addmm(self.b_enc, x - self.input_bias(), self.W_enc)
        return EncoderPreActs.apply(x, self.input_bias(), self.W_enc, self.b_enc)

    def gathered_pre_acts(self, x: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """``vals`` (the pre-activations at latents ``idx``, computed without a graph) with their gradient
        path to the encoder (``GatheredPreActs``); plain autograd when ``x`` itself needs a gradient."""
        if x.requires_grad or x.device.type != "cpu":  # CSR products are measured on CPU only
            return torch.addmm(self.b_enc, x - self.input_bias(), self.W_enc).gather(1, idx)
        return GatheredPreActs.apply(x, self.input_bias(), self.W_enc, self.b_enc, idx, vals)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents (batch, d_sae)."""
        return self.activation(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> SaeOutput:
        pre = self.pre_acts(x)
        z = self.activation(pre)
        return SaeOutput(self.decode(z), z, pre=pre)

    def reconstruct(self, x: torch.Tensor) -> SaeOutput:
        """The forward pass with the skip connection of a skip transcoder added to ``recon``."""
        out = self(x)
        if self.W_skip is not None:
            out.recon = out.recon + x @ self.W_skip
        return out

    def loss_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        """The architecture's weighted training losses beside the reconstruction error (``dead``: the
        latents that have not fired for a while; ``out.recon``: what the SAE should match)."""
        return {}

    # --- training helpers ---------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Drop the part of W_dec's gradient that would only change the rows' norms (kept at 1)."""
        if self.W_dec.grad is not None:
            g = self.W_dec.grad
            g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec

    def sparse_decode(self, vals: torch.Tensor, idx: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """sum_j vals[:, j] * W_dec[idx[:, j]] (+ b_dec): k rows gathered instead of a dense (batch, d_sae)
        matmul; measurably faster when k << d_sae (see docs/benchmarks.md, SAE training)."""
        out = F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum")
        return out + self.b_dec if bias else out

    def auxk_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        """AuxK (Gao et al. 2024), for architectures whose options are ``AuxKOptions``: the top ``k_aux``
        dead latents reconstruct the residual error (of ``out.target`` for a transcoder), normalised by its
        variance."""
        target = x if out.target is None else out.target
        opts: AuxKOptions = self.options
        k_aux = opts.k_aux or self.d_in // 2
        n_dead = int(dead.sum())
        if opts.auxk_coeff <= 0 or n_dead == 0 or k_aux <= 0:
            return {}
        pre = out.pre if out.pre is not None else self.pre_acts(x)
        dead_ids = dead.nonzero().squeeze(1)
        # top-k among the dead columns only: no full-size masked copy of the pre-activations
        vals, local = pre.index_select(1, dead_ids).topk(min(k_aux, n_dead), dim=-1, sorted=False)
        ids = dead_ids[local]
        if not pre.requires_grad:  # the forward kept no graph: the chosen entries get theirs here
            vals = self.gathered_pre_acts(x, ids, vals)
        err = (target - out.recon).detach()
        err_hat = self.sparse_decode(torch.relu(vals), ids, bias=False)
        total_var = (err - err.mean(0)).pow(2).sum()
        return {"auxk": opts.auxk_coeff * (err_hat - err).pow(2).sum() / total_var.clamp_min(1e-12)}

    # --- export -----------------------------------------------------------------------------
    def export_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors for ``sae_weights.safetensors`` (SAELens names, float32)."""
        out = {n: p.detach().float().contiguous() for n, p in
               (("W_enc", self.W_enc), ("W_dec", self.W_dec), ("b_enc", self.b_enc), ("b_dec", self.b_dec))}
        if self.W_skip is not None:  # SAELens' SkipTranscoder keeps W_skip as (d_out, d_in)
            out["W_skip"] = self.W_skip.detach().t().float().contiguous()
        return out

    def export_cfg(self) -> dict:
        return {"architecture": self.saelens_arch or self.arch}

    def transcoder_cfg(self, architecture: str) -> dict:
        """``cfg.json`` fields of a transcoder whose SAE form SAELens calls ``architecture``: SAELens 6 has ReLU
        and JumpReLU transcoders, each with or without the skip connection; no TopK one."""
        kind = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}.get(architecture)
        if kind and self.W_skip is not None:
            kind = kind.replace("transcoder", "skip_transcoder")
        return {"architecture": kind or f"{architecture}_transcoder", "d_out": self.d_out,
                "apply_b_dec_to_input": False}

    @torch.no_grad()
    def fold_input_scale(self, scale: float | torch.Tensor, out_scale: float | torch.Tensor | None = None) -> None:
        """Make a model trained on ``x * scale`` (and, for a transcoder, targets ``y * out_scale``) take raw
        ``x``: latents unchanged, outputs in raw units."""
        # a crosscoder's scales are per dimension (each hook normalised on its own): vectors broadcast
        s_in = torch.as_tensor(scale, dtype=self.W_enc.dtype).reshape(-1, 1)
        s_out = torch.as_tensor(scale if out_scale is None else out_scale, dtype=self.W_dec.dtype).reshape(1, -1)
        self.W_enc *= s_in
        self.W_dec /= s_out
        self.b_dec /= s_out.reshape(-1)
        if self.W_skip is not None:
            self.W_skip *= s_in / s_out


def topk_mask(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Dense activations keeping each row's top ``k`` (ReLU'd) pre-activations."""
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))


def residual_directions(sae: SparseAutoencoder, w_out: torch.Tensor) -> torch.Tensor:
    """Each feature's write to the residual stream, ``W_out @ z`` (d_sae × d_model), for an SAE of MLP hidden
    activations (``mlp_hidden.N``) and that MLP's output projection ``w_out`` (d_model × d_mlp)."""
    if w_out.shape[1] != sae.d_in:
        raise ValueError(f"the MLP output projection takes {w_out.shape[1]} neurons, the SAE {sae.d_in}")
    return sae.W_dec.detach().float() @ w_out.float().t()

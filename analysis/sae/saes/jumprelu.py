"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre * H(pre - theta), a per-latent threshold learnt with a
straight-through estimator (rectangle kernel of width ``bandwidth``), and an L0 penalty."""

from __future__ import annotations

import math

import torch

from analysis.sae.base import SparseAutoencoder


class _Step(torch.autograd.Function):
    """H(x - theta); d/dtheta through a rectangle kernel, no gradient to x."""

    @staticmethod
    def forward(ctx, x, theta, bandwidth):
        ctx.save_for_backward(x, theta)
        ctx.bandwidth = bandwidth
        return (x > theta).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, theta = ctx.saved_tensors
        bw = ctx.bandwidth
        kernel = ((x - theta).abs() < bw / 2).to(x.dtype) / bw
        return None, (-kernel * grad).sum(0), None


class _JumpReLU(torch.autograd.Function):
    """x * H(x - theta); gradient to x where active, to theta through the kernel."""

    @staticmethod
    def forward(ctx, x, theta, bandwidth):
        ctx.save_for_backward(x, theta)
        ctx.bandwidth = bandwidth
        return x * (x > theta).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, theta = ctx.saved_tensors
        bw = ctx.bandwidth
        active = (x > theta).to(x.dtype)
        kernel = ((x - theta).abs() < bw / 2).to(x.dtype) / bw
        return active * grad, (-theta * kernel * grad).sum(0), None


class JumpReLUSAE(SparseAutoencoder):
    arch = "jumprelu"
    saelens_arch = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, **options) -> None:
        super().__init__(d_in, d_sae, k, seed, **options)
        init = float(options.get("threshold_init", 0.1))
        self.log_threshold = torch.nn.Parameter(torch.full((d_sae,), math.log(init)))
        self.bandwidth = float(options.get("bandwidth", 0.05))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return _JumpReLU.apply(torch.relu(pre), self.threshold, self.bandwidth)

    def sparsity_loss(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        coeff = float(self.options.get("l0_coeff", 1.0))
        return coeff * _Step.apply(torch.relu(pre), self.threshold, self.bandwidth).sum(-1).mean()

    def export_tensors(self) -> dict[str, torch.Tensor]:
        out = super().export_tensors()
        out["threshold"] = self.threshold.detach().float().contiguous()
        return out

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        super().fold_input_scale(scale)  # pre-activations are unchanged, so the thresholds are too

"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre * H(pre - theta), a per-latent threshold learnt with a
straight-through estimator (rectangle kernel of width ``bandwidth``), and an L0 penalty."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from analysis.sae.base import SaeOutput, SparseAutoencoder
from analysis.sae.registry import Architecture, register


@dataclass
class JumpReLUOptions:
    l0_coeff: float = 1.0
    """jumprelu: weight of the L0 penalty."""

    bandwidth: float = 0.05
    """jumprelu: width of the straight-through kernel (inputs at mean norm sqrt(d))."""

    threshold_init: float = 0.1
    """jumprelu: initial threshold."""


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
        kernel = ((x - theta).abs() < ctx.bandwidth / 2).to(x.dtype) / ctx.bandwidth
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
        active = (x > theta).to(x.dtype)
        kernel = ((x - theta).abs() < ctx.bandwidth / 2).to(x.dtype) / ctx.bandwidth
        return active * grad, (-theta * kernel * grad).sum(0), None


class JumpReLUSAE(SparseAutoencoder):
    arch = "jumprelu"
    saelens_arch = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, seed: int = 0, options=None) -> None:
        super().__init__(d_in, d_sae, k, seed, options or JumpReLUOptions())
        self.log_threshold = torch.nn.Parameter(torch.full((d_sae,), math.log(self.options.threshold_init)))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return _JumpReLU.apply(torch.relu(pre), self.threshold, self.options.bandwidth)

    def loss_terms(self, x: torch.Tensor, out: SaeOutput, dead: torch.Tensor) -> dict[str, torch.Tensor]:
        l0 = _Step.apply(torch.relu(out.pre), self.threshold, self.options.bandwidth).sum(-1).mean()
        return {"l0": self.options.l0_coeff * l0}

    def export_tensors(self) -> dict[str, torch.Tensor]:
        out = super().export_tensors()
        out["threshold"] = self.threshold.detach().float().contiguous()
        return out


register(Architecture("jumprelu", JumpReLUSAE, JumpReLUOptions))

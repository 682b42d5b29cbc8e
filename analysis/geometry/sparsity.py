"""Sparsity: the fraction of near-zero entries, per-dimension firing frequency and dead dimensions; for
post-activation hooks (``mlp_hidden.N``) the fraction of non-positive entries, the measure of "The Lazy
Neuron Phenomenon" (Li et al. 2023) and "Sparsing Law" (Luo et al. 2024)."""

from __future__ import annotations

import numpy as np

from analysis.geometry.registry import Batch, Definition, HookContext, Sample, Statistic, StatResult, register

SOURCE = "Li et al. 2023, The Lazy Neuron Phenomenon; Luo et al. 2024, Sparsing Law"


class SparsityAccumulator:
    def __init__(self, ctx: HookContext) -> None:
        self.ctx, self.eps = ctx, float(ctx.settings.eps)
        self.n, self.near_zero, self.non_positive = 0, 0, 0
        self.fires = np.zeros(ctx.width, np.int64)

    def update(self, b: Batch) -> None:
        small = np.abs(b.x) <= self.eps
        self.n += len(b.x)
        self.near_zero += int(small.sum())
        if self.ctx.post_activation:
            self.non_positive += int((b.x <= 0).sum())
            self.fires += (b.x > self.eps).sum(axis=0)  # a unit fires when its output is positive
        else:
            self.fires += (~small).sum(axis=0)

    def finish(self, sample: Sample) -> StatResult:  # noqa: ARG002 - exact over all rows
        out = StatResult()
        entries = max(self.n * self.ctx.width, 1)
        freq = self.fires / max(self.n, 1)
        out.scalars.update(sparsity=self.near_zero / entries, dead_dims=int((self.fires == 0).sum()),
                           mean_firing_frequency=float(freq.mean()))
        fire_rule = "x > eps" if self.ctx.post_activation else "|x| > eps"
        out.definitions["sparsity"] = Definition(f"fraction of entries with |x| <= eps (eps={self.eps:g})", SOURCE)
        out.definitions["dead_dims"] = Definition(f"dimensions that never fire ({fire_rule}) in any row")
        out.definitions["mean_firing_frequency"] = Definition(f"mean over dimensions of the fraction of rows with "
                                                              f"{fire_rule}")
        if self.ctx.post_activation:
            out.scalars["non_positive"] = self.non_positive / entries
            out.definitions["non_positive"] = Definition("fraction of entries <= 0 after the MLP nonlinearity "
                                                         "(lazy-neuron sparsity)", SOURCE)
        out.per_dim["firing_frequency"] = freq
        return out


register(Statistic("sparsity", "near-zero fraction, firing frequency per dimension, dead dimensions, "
                               "non-positive fraction of mlp_hidden.N", SparsityAccumulator, order=20))

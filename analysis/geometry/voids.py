"""Voids (Shemiranifar 2025, "Void in Language Models"): layers that leave a token's residual norm unchanged,
found with L2 Adaptive Computation (LAC; Shemiranifar & Dehghani, ICLR 2023).

The rule, as the paper's code applies it per token: with ``δ_l = ‖h_l‖₂ − ‖h_{l−1}‖₂`` the change of the
residual norm over layer ``l`` (``h_{−1}`` the embeddings), layer ``l`` is *activated* when
``δ_l ≥ α · (max_{j<l} δ_j − min_{j<l} δ_j)`` and a *void* otherwise (α = 0.8 in the paper's runs). For the
first layer the range is empty (0; the code's range over a batch of one prompt), so layer 0 is a void when
the norm shrinks. Voids need every layer's norm of the same token: each hook's pass stores its per-row
norms in blocks (``OUT/hooks/HOOK/norms-*.npy``) and the driver applies the rule block by block.
"""

from __future__ import annotations

import numpy as np

from analysis.geometry.registry import Batch, HookContext, Sample, Statistic, StatResult, register

BLOCK_ROWS = 1 << 20
SOURCE = "Shemiranifar 2025, Void in Language Models (L2 Adaptive Computation)"


def lac_voids(norms: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """Which layers are voids for each token: ``norms`` is ``(L + 1, n)`` (the input of the first layer, then
    each layer's output); the result is ``(L, n)`` bool, True where layer ``l`` is a void (see the module)."""
    delta = np.diff(np.asarray(norms, dtype=np.float64), axis=0)
    run_max = np.maximum.accumulate(delta, axis=0)
    run_min = np.minimum.accumulate(delta, axis=0)
    span = np.zeros_like(delta)
    span[1:] = run_max[:-1] - run_min[:-1]  # range of δ_j over j < l
    return delta < alpha * span


class VoidCounter:
    """Void counts per layer over blocks of tokens, overall and per phase (prompt / generated)."""

    def __init__(self, layers: int, alpha: float) -> None:
        self.alpha = alpha
        self.voids = {k: np.zeros(layers, np.int64) for k in ("all", "prompt", "generated")}
        self.tokens = dict.fromkeys(("all", "prompt", "generated"), 0)

    def add(self, norms: np.ndarray, generated: np.ndarray | None = None) -> None:
        v = lac_voids(norms, self.alpha)
        self.voids["all"] += v.sum(axis=1)
        self.tokens["all"] += v.shape[1]
        if generated is not None:
            for key, sel in (("prompt", ~generated), ("generated", generated)):
                self.voids[key] += v[:, sel].sum(axis=1)
                self.tokens[key] += int(sel.sum())

    def fractions(self, key: str = "all") -> np.ndarray | None:
        return self.voids[key] / self.tokens[key] if self.tokens[key] else None


class NormBlocks:
    """Per-row norms of one hook, handed on in blocks of ``BLOCK_ROWS`` rows (row order)."""

    def __init__(self, ctx: HookContext) -> None:
        self.emit, self.parts, self.phase, self.rows, self.block = ctx.emit, [], [], 0, 0

    def update(self, b: Batch) -> None:
        self.parts.append(b.norms.astype(np.float32))
        if b.phase is not None:
            self.phase.append(b.phase.astype(bool))
        self.rows += len(b.x)
        while self.rows >= BLOCK_ROWS:
            self._flush(BLOCK_ROWS)

    def _flush(self, n: int) -> None:
        norms = np.concatenate(self.parts)
        self.emit("norms", self.block, norms[:n])
        self.parts = [norms[n:]]
        if self.phase:
            phase = np.concatenate(self.phase)
            self.emit("phase", self.block, phase[:n])
            self.phase = [phase[n:]]
        self.rows -= n
        self.block += 1

    def finish(self, sample: Sample) -> StatResult:  # noqa: ARG002 - voids are computed across hooks
        if self.rows:
            self._flush(self.rows)
        return StatResult()


register(Statistic("voids", "LAC voids: fraction of tokens for which each layer is a void (prompt/generated)",
                   lambda ctx: NormBlocks(ctx) if ctx.emit is not None else None, order=70))

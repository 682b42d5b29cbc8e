"""Core reconstruction and sparsity metrics of an SAE, accumulated batch by batch (SAELens' and SAEBench's core
set): FVU / explained variance, cosine of x and x̂, the L2 ratio ‖x̂‖/‖x‖ (shrinkage), the relative
reconstruction bias E‖x̂‖² / E[x·x̂] (Gated SAE paper, eq. 10, as SAEBench's ``core`` computes it), L0, L1, and
dead / dense fractions at several firing-frequency thresholds.

Explained variance here is ``1 - FVU`` with FVU pooled over every evaluated row (sum of squared errors over the
sum of squared deviations from the rows' mean), so it does not depend on how rows are batched; SAEBench averages
per-batch values, which agrees to within its batches' spread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from shards.records import JsonRecord

#: a latent is dead below these firing frequencies (0: never fired on the evaluated rows)
DEAD_BELOW = (0.0, 1e-5, 1e-4)
#: and dense above these
DENSE_ABOVE = (0.01, 0.1, 0.5)


@dataclass
class SaeEval(JsonRecord):
    """An SAE's quality on the evaluated rows (raw units)."""

    rows: int
    mse: float
    fvu: float  #: sum of squared errors / sum of squared deviations from the evaluated rows' mean
    l0: float
    dead_frac: float  #: latents that never fired on these rows
    dense_frac: float  #: latents firing on more than 10 % of them
    explained_variance: float = float("nan")  #: 1 - fvu
    cossim: float = float("nan")  #: mean over rows of cos(x, x̂) (rows with x = 0 left out)
    l2_ratio: float = float("nan")  #: mean over rows of ‖x̂‖ / ‖x‖ (below 1: shrinkage; rows with x = 0 left out)
    relative_reconstruction_bias: float = float("nan")  #: E‖x̂‖² / E[x·x̂] (1: unbiased; < 1 shrinks)
    l1: float = float("nan")  #: mean over rows of Σ|z|
    dead_below: dict = field(default_factory=dict)  #: threshold -> fraction of latents firing less often
    dense_above: dict = field(default_factory=dict)  #: threshold -> fraction of latents firing more often
    split: dict = field(default_factory=dict)  #: which rows these are (analysis.sae.split.EvalSplit), if known


class CoreAccumulator:
    """Sums over batches of (x, x̂, z); ``result()`` the ``SaeEval`` and each latent's firing frequency."""

    def __init__(self, d_sae: int) -> None:
        self.n, self.nonzero, self.sse, self.l0, self.l1 = 0, 0, 0.0, 0.0, 0.0
        self.sum_x: torch.Tensor | None = None
        self.sum_x2 = self.cos = self.ratio = self.xhat2 = self.dot = 0.0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)

    @torch.no_grad()
    def add(self, x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor) -> None:
        if not len(x):
            return
        xd, hd = x.double(), x_hat.double()
        self.sse += float((hd - xd).pow(2).sum())
        active = z != 0
        self.l0 += float(active.sum())
        self.l1 += float(z.double().abs().sum())
        self.fires += active.sum(0).double()
        self.sum_x = xd.sum(0) if self.sum_x is None else self.sum_x + xd.sum(0)
        self.sum_x2 += float(xd.pow(2).sum())
        nx, nh = xd.norm(dim=1), hd.norm(dim=1)
        dot = (xd * hd).sum(1)
        ok = nx > 0  # an all-zero row has no direction: left out of the cosine and the ratio (counted)
        self.cos += float((dot[ok] / (nx[ok] * nh[ok]).clamp_min(1e-30)).sum())
        self.ratio += float((nh[ok] / nx[ok]).sum())
        self.nonzero += int(ok.sum())
        self.xhat2 += float(nh.pow(2).sum())
        self.dot += float(dot.sum())
        self.n += len(x)

    def result(self, split: dict | None = None) -> tuple[SaeEval, np.ndarray]:
        n = max(self.n, 1)
        total_var = self.sum_x2 - float(self.sum_x.pow(2).sum()) / n if self.sum_x is not None else 0.0
        fvu = self.sse / total_var if total_var > 0 else float("nan")
        freq = (self.fires / n).numpy()
        return SaeEval(rows=self.n, mse=self.sse / n, fvu=fvu, l0=self.l0 / n, dead_frac=float((freq == 0).mean()),
                       dense_frac=float((freq > 0.1).mean()), explained_variance=1.0 - fvu,
                       cossim=self.cos / max(self.nonzero, 1), l2_ratio=self.ratio / max(self.nonzero, 1),
                       relative_reconstruction_bias=self.xhat2 / self.dot if self.dot else float("nan"),
                       l1=self.l1 / n, dead_below=density_fractions(freq, DEAD_BELOW, below=True),
                       dense_above=density_fractions(freq, DENSE_ABOVE, below=False), split=split or {}), freq


def density_fractions(freq: np.ndarray, thresholds, below: bool) -> dict[str, float]:
    """Fraction of latents firing at most (``below``: 0 means never) or more than each threshold."""
    if below:
        return {f"{t:g}": float((freq <= t).mean()) for t in thresholds}
    return {f"{t:g}": float((freq > t).mean()) for t in thresholds}


@torch.no_grad()
def core_metrics(sae, batches, split: dict | None = None) -> tuple[SaeEval, np.ndarray]:
    """``SaeEval`` and firing frequencies of ``sae`` over ``batches`` of raw input rows ``(n, d_in)``, or of
    ``(x, target)`` pairs for a transcoder (the target is what the SAE reconstructs)."""
    acc = CoreAccumulator(sae.d_sae)
    for batch in batches:
        x, target = batch if isinstance(batch, tuple) else (batch, batch)
        z = sae.encode(x)
        recon = sae.decode(z)
        if getattr(sae, "W_skip", None) is not None:  # a skip transcoder's linear path
            recon = recon + x @ sae.W_skip
        acc.add(target, recon, z)
    return acc.result(split)

"""Spectrum: the exact covariance of a hook over all rows (streamed, float64), its eigenvalues, effective rank,
participation ratio, variance in the top components, and anisotropy (mean pairwise cosine, Ethayarajh 2019)."""

from __future__ import annotations

import numpy as np

from analysis.geometry.registry import Batch, Definition, HookContext, Sample, Statistic, StatResult, register


def effective_rank(eigenvalues: np.ndarray) -> float:
    """exp of the Shannon entropy of the normalised eigenvalues (Roy & Vetterli 2007); negatives count as 0."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """(Σλ)² / Σλ² (Gao et al. 2017)."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)
    sq = (lam * lam).sum()
    return float(lam.sum() ** 2 / sq) if sq > 0 else 0.0


def anisotropy(x: np.ndarray) -> float:
    """Mean cosine over all pairs of distinct rows with non-zero norm: (‖Σu‖² − n) / (n(n − 1)), u = x/‖x‖."""
    x = np.asarray(x, dtype=np.float64)
    nrm = np.linalg.norm(x, axis=1)
    u = x[nrm > 0] / nrm[nrm > 0, None]
    n = len(u)
    s = u.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1))) if n > 1 else 0.0


class SpectrumAccumulator:
    """Sums around a shift (the first batch's mean: keeps the float64 sums well conditioned), so that
    cov = (Σyyᵀ − ΣyΣyᵀ/n) / (n − 1) with y = x − shift, equal to ``np.cov`` of all rows."""

    def __init__(self, ctx: HookContext) -> None:
        self.ctx, self.n, self.shift = ctx, 0, None
        d = ctx.width
        self.sy, self.syy = np.zeros(d), np.zeros((d, d))
        self.su, self.nu = np.zeros(d), 0
        self.buf = np.empty((0, d))

    def update(self, b: Batch) -> None:
        if self.shift is None:
            self.shift = b.x.mean(axis=0)
        if len(self.buf) < len(b.x):
            self.buf = np.empty_like(b.x)
        y = np.subtract(b.x, self.shift, out=self.buf[:len(b.x)])  # no new 8192 x d array per batch
        self.n += len(y)
        self.sy += y.sum(axis=0)
        self.syy += y.T @ y  # numpy runs Aᵀ·A as a symmetric rank-k update (half the flops of a product)
        ok = b.norms > 0
        inv = np.divide(1.0, b.norms, out=np.zeros_like(b.norms), where=ok)
        self.su += b.x.T @ inv  # Σ x/‖x‖ as one product
        self.nu += int(ok.sum())

    def covariance(self) -> np.ndarray:
        return (self.syy - np.outer(self.sy, self.sy) / self.n) / max(self.n - 1, 1)

    def finish(self, sample: Sample) -> StatResult:  # noqa: ARG002 - exact over all rows
        out = StatResult()
        if self.n == 0:
            return out
        cov = self.covariance()
        lam = np.linalg.eigvalsh(cov)[::-1]
        total = float(np.clip(lam, 0, None).sum())
        k = min(int(self.ctx.settings.top_k), len(lam))
        cum = np.cumsum(np.clip(lam, 0, None)) / total if total > 0 else np.zeros_like(lam)
        nu = self.nu
        aniso = float((self.su @ self.su - nu) / (nu * (nu - 1))) if nu > 1 else None
        out.scalars.update(total_variance=total, effective_rank=effective_rank(lam),
                           participation_ratio=participation_ratio(lam), var_top1=float(cum[0]),
                           var_top_k=float(cum[k - 1]), anisotropy=aniso)
        out.definitions.update(
            total_variance=Definition("trace of the covariance (sample covariance, n - 1)"),
            effective_rank=Definition("exp(entropy of the normalised covariance eigenvalues)", "Roy & Vetterli 2007"),
            participation_ratio=Definition("(Σλ)² / Σλ² of the covariance eigenvalues", "Gao et al. 2017"),
            var_top1=Definition("fraction of the variance in the first principal component"),
            var_top_k=Definition(f"fraction of the variance in the first k={k} principal components"),
            anisotropy=Definition("mean cosine over all pairs of distinct rows", "Ethayarajh 2019"))
        mean = self.shift + self.sy / self.n
        out.per_dim.update(mean=mean, variance=np.diag(cov).copy())
        out.tables["spectrum"] = [{"hook": self.ctx.hook, "component": i, "eigenvalue": float(v),
                                   "cumulative_variance": float(c)}
                                  for i, (v, c) in enumerate(zip(lam, cum, strict=True))]
        return out


register(Statistic("spectrum", "exact covariance eigenvalues, effective rank, participation ratio, top-k variance, "
                               "anisotropy", SpectrumAccumulator, order=40))

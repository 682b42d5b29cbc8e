"""Norms and layer change: ‖x‖ per hook and per position bucket, how much each layer changes the residual
stream, and the depth-efficiency measures of Csordás et al. 2025 ("Do Language Models Use Their Depth
Efficiently?") where the dataset has the sub-layer outputs ``attn.N`` and ``mlp.N``."""

from __future__ import annotations

import numpy as np

from analysis.geometry.registry import Batch, Definition, HookContext, Sample, Statistic, StatResult, register

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
MAX_BUCKET = 32


def position_bucket(position: np.ndarray) -> np.ndarray:
    """0 for position 0, k for positions [2^(k-1), 2^k), -1 for pooled rows (position -1)."""
    pos = np.asarray(position, dtype=np.int64)
    out = np.zeros(len(pos), dtype=np.int64)
    pos_pos = pos > 0
    out[pos_pos] = np.floor(np.log2(pos[pos_pos])).astype(np.int64) + 1
    out[pos < 0] = -1
    return out


def bucket_range(bucket: int) -> tuple[int, int]:
    """Positions [lo, hi] of a bucket (-1: pooled rows)."""
    if bucket < 0:
        return -1, -1
    return (0, 0) if bucket == 0 else (1 << (bucket - 1), (1 << bucket) - 1)


def row_norms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise cos(a, b) and which rows have it (both norms non-zero)."""
    na, nb = row_norms(a), row_norms(b)
    ok = (na > 0) & (nb > 0)
    cos = np.einsum("ij,ij->i", a, b)[ok] / (na[ok] * nb[ok])
    return cos, ok


class Sums:
    """Count, sum and sum of squares of a per-row quantity (mean and population std at the end)."""

    def __init__(self) -> None:
        self.n, self.s, self.s2 = 0, 0.0, 0.0

    def add(self, v: np.ndarray) -> None:
        self.n += len(v)
        self.s += float(v.sum())
        self.s2 += float((v * v).sum())

    def mean(self) -> float | None:
        return self.s / self.n if self.n else None

    def std(self) -> float | None:
        if not self.n:
            return None
        m = self.s / self.n
        return float(np.sqrt(max(self.s2 / self.n - m * m, 0.0)))


class NormAccumulator:
    def __init__(self, ctx: HookContext) -> None:
        self.ctx = ctx
        self.norm = Sums()
        self.bucket_n = np.zeros(MAX_BUCKET + 1, np.int64)  # index 0: pooled rows, k + 1: bucket k
        self.bucket_s = np.zeros(MAX_BUCKET + 1)
        self.bucket_s2 = np.zeros(MAX_BUCKET + 1)
        self.change_cos, self.change_rel = Sums(), Sums()
        self.depth_rel, self.depth_cos = Sums(), Sums()

    def update(self, b: Batch) -> None:
        nrm = b.norms
        self.norm.add(nrm)
        idx = np.minimum(position_bucket(b.position) + 1, MAX_BUCKET)
        self.bucket_n += np.bincount(idx, minlength=MAX_BUCKET + 1)
        self.bucket_s += np.bincount(idx, weights=nrm, minlength=MAX_BUCKET + 1)
        self.bucket_s2 += np.bincount(idx, weights=nrm * nrm, minlength=MAX_BUCKET + 1)
        if b.prev is not None:
            cos, _ok = cosine_rows(b.x, b.prev)
            self.change_cos.add(1.0 - cos)
            prev_n = row_norms(b.prev)
            has = prev_n > 0
            self.change_rel.add(row_norms(b.x - b.prev)[has] / prev_n[has])
        if b.attn is not None and b.mlp is not None and b.resid_in is not None:
            update = b.attn + b.mlp
            h_n = row_norms(b.resid_in)
            has = h_n > 0
            self.depth_rel.add(row_norms(update)[has] / h_n[has])
            cos, _ok = cosine_rows(b.resid_in, update)
            self.depth_cos.add(cos)

    def _position_rows(self, sample: Sample) -> list[dict]:
        """Exact mean and std per position bucket; percentiles from the sampled rows of the bucket."""
        rows = []
        s_norms = row_norms(sample.x)
        s_bucket = np.minimum(position_bucket(sample.position) + 1, MAX_BUCKET) if sample.position is not None \
            else np.full(len(s_norms), -1)
        for i in np.nonzero(self.bucket_n)[0]:
            n = int(self.bucket_n[i])
            mean = self.bucket_s[i] / n
            lo, hi = bucket_range(int(i) - 1)
            mine = s_norms[s_bucket == i]
            pct = np.percentile(mine, [5, 50, 95]) if len(mine) else [None] * 3
            rows.append({"hook": self.ctx.hook, "bucket": int(i) - 1, "position_lo": lo, "position_hi": hi,
                         "rows": n, "mean_norm": float(mean),
                         "std_norm": float(np.sqrt(max(self.bucket_s2[i] / n - mean * mean, 0.0))),
                         "sampled_rows": int(len(mine)), **{f"norm_p{q:02d}": None if v is None else float(v)
                                                            for q, v in zip((5, 50, 95), pct, strict=True)}})
        return rows

    def finish(self, sample: Sample) -> StatResult:
        out = StatResult()
        out.scalars.update(mean_norm=self.norm.mean(), std_norm=self.norm.std())
        out.definitions["mean_norm"] = Definition("mean of ‖x‖₂ over rows")
        out.definitions["std_norm"] = Definition("population standard deviation of ‖x‖₂ over rows")
        sample_norms = row_norms(sample.x)
        for p in PERCENTILES:
            key = f"norm_p{p:02d}"
            out.scalars[key] = float(np.percentile(sample_norms, p)) if len(sample_norms) else None
            out.definitions[key] = Definition(f"{p}th percentile of ‖x‖₂ (numpy linear interpolation)", exact=False)
        out.tables["norms_by_position"] = self._position_rows(sample)
        if self.ctx.prev is not None:
            out.scalars.update(change_from=self.ctx.prev, change_cos=self.change_cos.mean(),
                               change_rel=self.change_rel.mean())
            out.definitions["change_cos"] = Definition("mean over rows of 1 - cos(x_prev, x)")
            out.definitions["change_rel"] = Definition("mean over rows of ‖x - x_prev‖₂ / ‖x_prev‖₂")
        if self.ctx.sublayers is not None:
            out.scalars.update(depth_rel_contribution=self.depth_rel.mean(), depth_cos=self.depth_cos.mean())
            src = "Csordás et al. 2025, Do Language Models Use Their Depth Efficiently?"
            out.definitions["depth_rel_contribution"] = Definition("mean ‖a_l + m_l‖₂ / ‖h_l‖₂", src)
            out.definitions["depth_cos"] = Definition("mean cos(h_l, a_l + m_l)", src)
        return out


register(Statistic("norms", "‖x‖ by hook and position bucket; layer change; depth efficiency (attn.N + mlp.N)",
                   NormAccumulator, order=10))

"""Massive activations (Sun et al. 2024, "Massive Activations in Large Language Models"; Gallego-Feliciano
et al. 2025, "Hidden Dynamics of Massive Activations"): the largest |x| entries with where they occur, and
the dimensions that carry them. The papers' criterion, with its thresholds as flags: an entry is massive when
|x| > ``--massive-min`` (100) and |x| > ``--massive-ratio`` (1000) × the median |x| of the hook."""

from __future__ import annotations

import numpy as np

from analysis.geometry.registry import Batch, Definition, HookContext, Sample, Statistic, StatResult, register
from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID

SOURCE = "Sun et al. 2024, Massive Activations in Large Language Models"
_FIELDS = ("abs", "value", "row", "dim", EXAMPLE_ID, POSITION, TOKEN_ID)


class MassiveAccumulator:
    """Top-m |x| entries over all rows (exact), per-dimension max |x| and counts above the absolute threshold."""

    def __init__(self, ctx: HookContext) -> None:
        s = ctx.settings
        self.ctx, self.m = ctx, int(s.massive_top)
        self.min_abs, self.ratio = float(s.massive_min), float(s.massive_ratio)
        self.top = {k: np.zeros(0) for k in _FIELDS}
        self.max_abs = np.zeros(ctx.width)
        self.above = np.zeros(ctx.width, np.int64)

    def update(self, b: Batch) -> None:
        a = np.abs(b.x.astype(np.float32))  # exact: stored values are float16/bfloat16/float32
        col_max = a.max(axis=0)
        np.maximum(self.max_abs, col_max, out=self.max_abs)
        big = np.nonzero(col_max > self.min_abs)[0]  # counting only where some entry can pass
        if len(big):
            self.above[big] += np.count_nonzero(a[:, big] > self.min_abs, axis=0)
        r, c = self._candidates(a, col_max)
        if not len(r):
            return
        cand = {"abs": np.abs(b.x[r, c]), "value": b.x[r, c], "row": b.start + r, "dim": c,
                EXAMPLE_ID: b.example_id[r], POSITION: b.position[r], TOKEN_ID: b.token_id[r]}
        merged = {k: np.concatenate([self.top[k], cand[k]]) for k in _FIELDS}
        keep = np.argsort(-merged["abs"], kind="stable")[:self.m]
        self.top = {k: v[keep] for k, v in merged.items()}

    def _candidates(self, a: np.ndarray, col_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, dim) of the batch entries that may enter the top m: its own top m, found among the entries
        above the current m-th largest (after the first batches, few or no columns have any)."""
        if len(self.top["abs"]) < self.m:
            k = min(self.m, a.size)
            flat = np.argpartition(a.ravel(), a.size - k)[a.size - k:]
            return np.divmod(flat, a.shape[1])
        floor = self.top["abs"].min()
        cols = np.nonzero(col_max > floor)[0]
        if not len(cols):
            return cols, cols
        r, c = np.nonzero(a[:, cols] > floor)
        c = cols[c]
        if len(r) > self.m:
            keep = np.argpartition(-a[r, c], self.m - 1)[:self.m]
            r, c = r[keep], c[keep]
        return r, c

    def finish(self, sample: Sample) -> StatResult:
        out = StatResult()
        median = float(np.median(np.abs(sample.x))) if sample.x.size else 0.0
        cut = max(self.min_abs, self.ratio * median)
        dims = np.nonzero(self.max_abs > cut)[0]
        top_abs = float(self.top["abs"][0]) if len(self.top["abs"]) else 0.0
        out.scalars.update(max_abs=top_abs, median_abs=median,
                           max_to_median=top_abs / median if median > 0 else None, massive_dims=int(len(dims)),
                           massive_dim_list=",".join(map(str, dims.tolist())))
        out.definitions["max_abs"] = Definition("largest |x| over all entries", SOURCE)
        out.definitions["median_abs"] = Definition("median |x| over the sampled rows' entries", SOURCE, exact=False)
        out.definitions["max_to_median"] = Definition("max |x| / median |x|", SOURCE, exact=False)
        out.definitions["massive_dims"] = Definition(
            f"dimensions with an entry |x| > max(massive_min={self.min_abs:g}, massive_ratio={self.ratio:g} x "
            "median |x|)", SOURCE, exact=False)
        rows = []
        for i in range(len(self.top["abs"])):
            v = float(self.top["abs"][i])
            rows.append({"hook": self.ctx.hook, "dim": int(self.top["dim"][i]), "row": int(self.top["row"][i]),
                         EXAMPLE_ID: int(self.top[EXAMPLE_ID][i]), POSITION: int(self.top[POSITION][i]),
                         TOKEN_ID: int(self.top[TOKEN_ID][i]), "value": float(self.top["value"][i]),
                         "ratio_to_median": v / median if median > 0 else None, "massive": bool(v > cut)})
        out.tables["massive"] = rows
        out.per_dim.update(max_abs=self.max_abs.copy(), rows_above_massive_min=self.above.copy())
        return out


register(Statistic("massive", "top-m |x| entries with (dim, example_id, position, token_id); massive dimensions",
                   MassiveAccumulator, order=30))

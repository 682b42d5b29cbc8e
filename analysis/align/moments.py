"""Cross moments of several views of the same rows, accumulated in one streaming pass in float64: all that linear
CKA (biased and debiased), Procrustes and angular shape distances need, in memory independent of the number of
rows.

For views x (d_x) and y (d_y) it keeps n, Σx, ΣxyᵀΣ (every block of ZᵀZ for Z = [x | y | ...]), the per-row
squared norms q_v = ‖x_v − s_v‖² and Σ q_a q_b, Σ q_a x_b, Σ q_a. Values are shifted by the first batch's mean
(s_v) so that float64 sums do not cancel. From these, for centred data X̃ = X − mean:
X̃ᵀỸ = Σxyᵀ − n·μₓμᵧᵀ and Σᵢ‖x̃ᵢ‖²‖ỹᵢ‖² (the term the debiased estimator needs) by expanding
‖x̃ᵢ‖² = qᵢ − 2 x'ᵢ·μ' + ‖μ'‖² (x' = x − s, μ' its mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import dsyrk


@dataclass(kw_only=True)
class PairMoments:
    """The moments of two centred views, as the metrics read them."""

    n: int
    xty: np.ndarray  #: X̃ᵀỸ (d_x, d_y)
    xtx: np.ndarray  #: X̃ᵀX̃
    yty: np.ndarray  #: ỸᵀỸ
    rows_xy: float  #: Σᵢ ‖x̃ᵢ‖² ‖ỹᵢ‖²
    rows_xx: float  #: Σᵢ ‖x̃ᵢ‖⁴
    rows_yy: float


class CrossMoments:
    """Accumulates the moments of ``len(dims)`` views batch by batch (each batch: one array per view, same rows)."""

    def __init__(self, dims: list[int]) -> None:
        self.dims = list(dims)
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)])
        d = int(self.offsets[-1])
        v = len(self.dims)
        self.n = 0
        self.shift: list[np.ndarray] | None = None
        self.s = np.zeros(d)  #: Σ z'
        self.zz = np.zeros((d, d), order="F")  #: Σ z'z'ᵀ (upper triangle, dsyrk)
        self.qq = np.zeros((v, v))  #: Σ q qᵀ
        self.qz = np.zeros((v, d))  #: Σ q z'ᵀ
        self.q = np.zeros(v)  #: Σ q

    def add(self, views: list[np.ndarray]) -> None:
        views = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in views]
        if self.shift is None:
            self.shift = [x.mean(axis=0) for x in views]
        z = np.concatenate([x - s for x, s in zip(views, self.shift, strict=True)], axis=1)
        q = np.stack([np.einsum("ij,ij->i", z[:, a:b], z[:, a:b])
                      for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)], axis=1)
        self.n += len(z)
        self.s += z.sum(axis=0)
        self.zz = dsyrk(1.0, z, beta=1.0, c=self.zz, trans=1, overwrite_c=1)
        self.qq += q.T @ q
        self.qz += q.T @ z
        self.q += q.sum(axis=0)

    def _raw(self, a: int, b: int) -> np.ndarray:
        """Σ x'_a x'_bᵀ (the shifted, uncentred block)."""
        lo, hi = sorted((a, b))
        block = self.zz[self.offsets[lo]:self.offsets[lo + 1], self.offsets[hi]:self.offsets[hi + 1]]
        if a == b:  # dsyrk fills the upper triangle only
            return np.triu(block) + np.triu(block, 1).T
        return block if a < b else block.T

    def _mean(self, a: int) -> np.ndarray:
        return self.s[self.offsets[a]:self.offsets[a + 1]] / self.n

    def _centered(self, a: int, b: int) -> np.ndarray:
        return self._raw(a, b) - self.n * np.outer(self._mean(a), self._mean(b))

    def _rows(self, a: int, b: int) -> float:
        """Σᵢ ‖x̃_a,i‖² ‖x̃_b,i‖², expanding ‖x̃ᵢ‖² = qᵢ − 2 x'ᵢ·μ' + ‖μ'‖² in the shifted sums."""
        n = self.n
        ma, mb = self._mean(a), self._mean(b)
        na, nb = ma @ ma, mb @ mb
        sa = slice(self.offsets[a], self.offsets[a + 1])
        sb = slice(self.offsets[b], self.offsets[b + 1])
        return float(self.qq[a, b]
                     - 2 * self.qz[a, sb] @ mb + nb * self.q[a]
                     - 2 * self.qz[b, sa] @ ma + na * self.q[b]
                     + 4 * ma @ self._raw(a, b) @ mb
                     - 2 * nb * (ma @ self.s[sa]) - 2 * na * (mb @ self.s[sb])
                     + n * na * nb)

    def pair(self, a: int, b: int) -> PairMoments:
        """The moments of views ``a`` and ``b``."""
        return PairMoments(n=self.n, xty=self._centered(a, b), xtx=self._centered(a, a), yty=self._centered(b, b),
                           rows_xy=self._rows(a, b), rows_xx=self._rows(a, a), rows_yy=self._rows(b, b))


def pair_moments(x: np.ndarray, y: np.ndarray) -> PairMoments:
    """The moments of two in-memory views (the reference the streamed ones are tested against)."""
    acc = CrossMoments([x.reshape(len(x), -1).shape[1], y.reshape(len(y), -1).shape[1]])
    acc.add([x, y])
    return acc.pair(0, 1)

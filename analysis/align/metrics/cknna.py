"""CKNNA (Huh et al. 2024, the platonic-representation hypothesis): CKA restricted to each row's mutual k nearest
neighbours — the unbiased HSIC (Song et al. 2012) of the two cosine kernels masked to the pairs (i, j) where j is
among i's k nearest in both views (self excluded), normalised by each view's own masked HSIC. As
minyoungg/platonic-rep ``metrics.py`` computes it (its defaults: unbiased, distance-aware), including the 1e-6
its denominator adds; rows are unit-normalised first, as its ``measure_alignment`` does and as ``mutual_knn``
here does. In memory: each view's Gram matrix and neighbour mask (N × N; ``--max-rows``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.align.metrics.knn import KnnOptions
from analysis.align.registry import AlignmentMetric, register_metric
from analysis.align.rsa import as_float64


@dataclass
class KernelView:
    gram: np.ndarray  #: N × N cosine similarities
    mask: np.ndarray  #: N × N, 1 where j is among row i's k nearest (self excluded)

    @property
    def nbytes(self) -> int:
        return self.gram.nbytes + self.mask.nbytes

    def __len__(self) -> int:
        return len(self.gram)


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741 - the paper's names
    """Song et al.'s unbiased HSIC of two N × N kernels (diagonals ignored)."""
    m = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    return float((np.sum(kt * lt.T) + kt.sum() * lt.sum() / ((m - 1) * (m - 2))
                  - 2 * float(kt.sum(0) @ lt.sum(1)) / (m - 2)) / (m * (m - 3)))


def kernel_view(x: np.ndarray, k: int) -> KernelView:
    x = as_float64(x).reshape(len(x), -1)
    if not 2 <= k < len(x):
        raise ValueError(f"CKNNA needs 2 <= --k < the number of rows ({len(x)}); got {k}")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    gram = x @ x.T
    hat = gram.copy()
    np.fill_diagonal(hat, -np.inf)
    mask = np.zeros_like(gram)
    np.put_along_axis(mask, np.argsort(-hat, axis=1, kind="stable")[:, :k], 1.0, axis=1)
    return KernelView(gram, mask)


def cknna_views(a: KernelView, b: KernelView) -> float:
    def sim(p: KernelView, q: KernelView) -> float:
        both = p.mask * q.mask
        return hsic_unbiased(both * p.gram, both * q.gram)

    return sim(a, b) / (np.sqrt(sim(a, a) * sim(b, b)) + 1e-6)


def cknna(X, Y, k: int = 10) -> float:
    """CKNNA of two representations of the same N rows.

    Example::

        cknna(vision_feats, text_feats, k=10)
    """
    return cknna_views(kernel_view(X, k), kernel_view(Y, k))


def cknna_null(x: np.ndarray, y: np.ndarray, perms: np.ndarray, options: KnnOptions) -> tuple[float, np.ndarray]:
    """CKNNA and its values with y's rows permuted: the permuted view's Gram matrix and neighbour mask are the
    original ones with both axes permuted."""
    va, vb = kernel_view(x, options.k), kernel_view(y, options.k)
    null = [cknna_views(va, KernelView(vb.gram[np.ix_(p, p)], vb.mask[np.ix_(p, p)])) for p in perms]
    return cknna_views(va, vb), np.asarray(null)


register_metric(AlignmentMetric("cknna", cknna, "CKA over mutual k-nearest-neighbour pairs (cosine kernels, unbiased "
                                "HSIC)", "Huh et al. 2024 (minyoungg/platonic-rep metrics.cknna)",
                                prepare=lambda x, o: kernel_view(x, o.k),
                                compare=lambda a, b, o: cknna_views(a, b), options=KnnOptions,
                                null=cknna_null, command="knn"))

"""Intrinsic dimension: TwoNN (Facco et al. 2017) on the run's seeded sample of rows.

Convention of scikit-dimension's ``TwoNN()`` (method "linear", discard_fraction 0.1): μ = r₂/r₁ per point,
points with r₁ = 0 (duplicates) dropped, the largest 10% of μ discarded, and the slope through the origin of
−log(1 − F) against log μ with F = i/N for the i-th smallest μ.
"""

from __future__ import annotations

import numpy as np

from analysis.geometry.registry import Definition, Sample, SampleOnly, Statistic, StatResult, register

SOURCE = "Facco et al. 2017, Estimating the intrinsic dimension of datasets by a minimal neighborhood information"


def twonn(x: np.ndarray, discard_fraction: float = 0.1) -> tuple[float, int]:
    """TwoNN intrinsic dimension of the rows of ``x`` and the number of points used (duplicates dropped)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        return float("nan"), 0
    import sklearn

    with sklearn.config_context(working_memory=128):  # distances in chunks, not 1 GiB at once
        dist, _ = NearestNeighbors(n_neighbors=2).fit(x).kneighbors()  # each point's two nearest others
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = dist[:, 1] / dist[:, 0]
    mu = mu[np.isfinite(mu)]
    n = len(mu)
    keep = int(n * (1 - discard_fraction))
    if keep < 2:
        return float("nan"), n
    xs = np.log(np.sort(mu)[:keep])
    ys = -np.log(1 - np.arange(1, keep + 1) / n)
    return float(xs @ ys / (xs @ xs)), n


class TwoNNAccumulator(SampleOnly):
    def finish(self, sample: Sample) -> StatResult:
        out = StatResult()
        dim, used = twonn(sample.x)
        out.scalars.update(twonn_id=dim, twonn_points=used)
        out.definitions["twonn_id"] = Definition("TwoNN, linear fit, 10% largest ratios discarded (scikit-dimension "
                                                 "TwoNN convention)", SOURCE, exact=False)
        return out


register(Statistic("intrinsic", "TwoNN intrinsic dimension on the seeded sample", TwoNNAccumulator, order=50))

"""Topological RSA (Lin & Kriegeskorte 2023, "The Topology and Geometry of Neural Representations"):
the geo-topological transform (dissimilarities below a lower quantile set to 0, above an upper one to 1,
linear in between) and the geodesic transform (shortest paths on the graph of the remaining edges).

Quantiles are computed per RDM: rsatoolbox's ``geotopological_transform`` computes them over all RDMs of an
``RDMs`` object at once, which clips RDMs of different scales very differently; ``pooled=True`` reproduces it.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import shortest_path

from analysis.align.vectors import square


def geotopological(vectors: np.ndarray, low: float, up: float, pooled: bool = False) -> np.ndarray:
    """``(k, M)`` condensed RDMs geo-topologically transformed with the ``low``/``up`` quantiles (per RDM, or
    over all of them with ``pooled``, as rsatoolbox)."""
    v = np.array(vectors, dtype=np.float64, ndmin=2)
    out = np.empty_like(v)
    for r in range(v.shape[0]):
        ref = v if pooled else v[r]
        lo, hi = np.quantile(ref, low), np.quantile(ref, up)
        x = v[r]
        y = np.where(x < lo, 0.0, np.where(x > hi, 1.0, (x - lo) / (hi - lo) if hi > lo else 0.0))
        out[r] = y
    return out


def geodesic(vectors: np.ndarray) -> np.ndarray:
    """rsatoolbox's ``geodesic_transform``: each RDM min-max scaled to [0, 1], edges of length 1 removed (and,
    as a graph from a dense matrix, edges of length 0), then all-pairs shortest path lengths (inf where
    disconnected)."""
    v = np.array(vectors, dtype=np.float64, ndmin=2)
    out = np.empty_like(v)
    for r in range(v.shape[0]):
        x = v[r]
        x = (x - x.min()) / (x.max() - x.min())
        g = square(x)
        g[g == 1] = 0.0  # removed edge (a zero in a dense csgraph input is no edge, as in networkx)
        d = shortest_path(g, method="FW" if g.shape[0] <= 300 else "D", directed=False)
        i, j = np.triu_indices(g.shape[0], 1)
        out[r] = d[i, j]
    return out


#: transforms by name (``--transform``), each ``(vectors, low, up, pooled) -> vectors``
TRANSFORMS = {
    "none": lambda v, low, up, pooled: np.array(v, dtype=np.float64, ndmin=2),
    "geotopological": geotopological,
    "geodesic": lambda v, low, up, pooled: geodesic(v),
    "geotopological+geodesic": lambda v, low, up, pooled: geodesic(geotopological(v, low, up, pooled)),
}


def transform(vectors: np.ndarray, name: str, low: float = 0.0, up: float = 1.0, pooled: bool = False) -> np.ndarray:
    """Apply a named transform (``TRANSFORMS``) to condensed RDMs."""
    return TRANSFORMS[name](vectors, low, up, pooled)

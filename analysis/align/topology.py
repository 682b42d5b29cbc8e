"""Topological RSA (Lin & Kriegeskorte 2023, "The Topology and Geometry of Neural Representations"):
the geo-topological transform (dissimilarities below a lower quantile set to 0, above an upper one to 1,
linear in between) and the geodesic transform (shortest paths on the graph of the remaining edges).

Quantiles are computed per RDM: rsatoolbox's ``geotopological_transform`` computes them over all RDMs of an
``RDMs`` object at once, which clips RDMs of different scales very differently; ``pooled=True`` reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.csgraph import shortest_path
from simple_parsing import field

from analysis.align.registry import Transform, get_transform, register_transform
from analysis.align.vectors import square
from shards.errors import ConfigError


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


@dataclass
class GeoTopologicalOptions:
    """Options of the geo-topological transforms."""

    gt_low: float = 0.0
    """Geo-topological lower quantile (dissimilarities below it become 0)."""

    gt_up: float = 1.0
    """Geo-topological upper quantile (above it: 1)."""

    pooled_quantiles: bool = field(default=False, action="store_true")
    """Geo-topological quantiles over all RDMs of a stack at once (rsatoolbox's behaviour) instead of per RDM."""

    def check(self) -> None:
        if not 0 <= self.gt_low <= self.gt_up <= 1:
            raise ConfigError(f"--gt-low/--gt-up must satisfy 0 <= low <= up <= 1, got {self.gt_low}, {self.gt_up}")


def _geotopological(v: np.ndarray, o: GeoTopologicalOptions) -> np.ndarray:
    return geotopological(v, o.gt_low, o.gt_up, o.pooled_quantiles)


register_transform(Transform("none", lambda v, o: np.array(v, dtype=np.float64, ndmin=2), "no transform",
                             every_pair=False))
register_transform(Transform("geotopological", _geotopological, "geo-topological (Lin & Kriegeskorte 2023)",
                             GeoTopologicalOptions))
register_transform(Transform("geodesic", lambda v, o: geodesic(v),
                             "geodesic: shortest paths (Lin & Kriegeskorte 2023)"))
register_transform(Transform("geotopological+geodesic", lambda v, o: geodesic(_geotopological(v, o)),
                             "geo-topological, then geodesic", GeoTopologicalOptions))


def transform(vectors: np.ndarray, name: str, options: GeoTopologicalOptions | None = None) -> np.ndarray:
    """Apply a registered transform (``--transform``) with its options (default: its defaults) to condensed RDMs."""
    t = get_transform(name)
    return t.apply(vectors, options if options is not None else (t.options() if t.options else None))

"""Model–brain and model–model alignment (``actlake align rsa|cka|knn|encode``).

One file per RDM method (``rdms/``), comparison method (``comparisons/``) and alignment metric (``metrics/``),
each registered by name (``registry.py``); the same computations as plain functions on numpy/torch arrays:
``rdm``, ``compare``, ``noise_ceiling``, ``cka``, ``mutual_knn``, ``procrustes_distance``, ``angular_distance``,
``ridge_cv``.
"""

from analysis.align import comparisons, metrics, rdms, topology  # noqa: F401  (registers the methods)
from analysis.align.rsa import compare, noise_ceiling, rdm

__all__ = ["compare", "noise_ceiling", "rdm"]

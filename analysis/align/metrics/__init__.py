"""Model–model alignment metrics, one file each; importing this package registers them."""

from analysis.align.metrics import cka, cknna, knn, procrustes  # noqa: F401

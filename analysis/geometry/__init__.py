"""Layer statistics and representation geometry over whole datasets (``actlake stats``).

One file per family of statistics, each registered by name (``registry.py``); every metric is also a plain
function on arrays: ``effective_rank``, ``participation_ratio``, ``anisotropy``, ``twonn``,
``cluster_indices``, ``dunn_index``, ``lac_voids``, ``lens_scores``.
"""

from analysis.geometry import clusters, intrinsic, logit_lens, massive, norms, sparsity, spectrum, voids  # noqa: F401
from analysis.geometry.clusters import cluster_indices, dunn_index
from analysis.geometry.intrinsic import twonn
from analysis.geometry.logit_lens import lens_scores
from analysis.geometry.spectrum import anisotropy, effective_rank, participation_ratio
from analysis.geometry.voids import lac_voids

__all__ = ["anisotropy", "cluster_indices", "dunn_index", "effective_rank", "lac_voids", "lens_scores",
           "participation_ratio", "twonn"]

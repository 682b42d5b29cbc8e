"""Euclidean distance, in the two conventions that disagree about it: rsatoolbox's squared distance divided by
the number of channels, Net2Brain's (and scipy's) plain distance."""

from __future__ import annotations

import numpy as np

from analysis.align.registry import RdmMethod, register_rdm


def _squared(x: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    out = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)  # rsatoolbox's own formula: equal to the last bit
    np.fill_diagonal(out, 0.0)
    return out


def euclidean_rdm(x: np.ndarray, convention: str = "rsatoolbox", **_) -> np.ndarray:
    """rsatoolbox: ``||x_i − x_j||² / n_features``; net2brain: ``||x_i − x_j||``."""
    d2 = _squared(x)
    if convention == "net2brain":
        return np.sqrt(np.clip(d2, 0.0, None))
    return d2 / x.shape[1]


register_rdm(RdmMethod("euclidean", euclidean_rdm, {
    "rsatoolbox": "squared Euclidean distance / number of channels (calc_rdm method='euclidean')",
    "net2brain": "Euclidean distance (RDMCreator distance='euclidean', scipy 'euclidean')"}))

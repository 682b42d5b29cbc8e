"""Correlation distance: 1 − Pearson r between two stimuli's feature vectors (rsatoolbox ``correlation``,
Net2Brain ``pearson``/``correlation``, scipy ``correlation``)."""

from __future__ import annotations

import numpy as np

from analysis.align.registry import RdmMethod, register_rdm


def correlation_rdm(x: np.ndarray, convention: str = "rsatoolbox", **_) -> np.ndarray:
    """``1 − corr(x_i, x_j)`` for the rows of ``x`` (stimuli × features); the same in both conventions."""
    xc = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", xc, xc))
    xc /= np.where(norms > 0, norms, 1.0)[:, None]
    out = 1.0 - xc @ xc.T
    np.fill_diagonal(out, 0.0)
    return out


register_rdm(RdmMethod("correlation", correlation_rdm, {
    "rsatoolbox": "1 - Pearson r of the two stimuli's patterns (calc_rdm method='correlation')",
    "net2brain": "1 - Pearson r (RDMCreator distance='pearson')"}))

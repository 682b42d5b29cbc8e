"""Cosine distance: 1 − cos(x_i, x_j) (Net2Brain ``cosine``, scipy ``cosine``; rsatoolbox has no cosine RDM)."""

from __future__ import annotations

import numpy as np

from analysis.align.registry import RdmMethod, register_rdm


def cosine_rdm(x: np.ndarray, convention: str = "rsatoolbox", **_) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    xn = x / np.where(norms > 0, norms, 1.0)[:, None]
    out = 1.0 - xn @ xn.T
    np.fill_diagonal(out, 0.0)
    return out


register_rdm(RdmMethod("cosine", cosine_rdm, {
    "rsatoolbox": "1 - cosine similarity (scipy 'cosine'; rsatoolbox has no cosine RDM)",
    "net2brain": "1 - cosine similarity (RDMCreator distance='cosine')"}))

"""Correlation distance: 1 − Pearson r between two stimuli's feature vectors (rsatoolbox ``correlation``,
Net2Brain ``pearson``/``correlation``, scipy ``correlation``)."""

from __future__ import annotations

import numpy as np

from analysis.align.rdms.cosine import cosine_rdm
from analysis.align.registry import RdmMethod, register_rdm


def correlation_rdm(x: np.ndarray, convention: str = "rsatoolbox", **_) -> np.ndarray:
    """``1 − corr(x_i, x_j)`` for the rows of ``x`` (stimuli × features); the same in both conventions."""
    return cosine_rdm(x - x.mean(axis=1, keepdims=True))  # correlation = cosine of the centred patterns


register_rdm(RdmMethod("correlation", correlation_rdm, {
    "rsatoolbox": "1 - Pearson r of the two stimuli's patterns (calc_rdm method='correlation')",
    "net2brain": "1 - Pearson r (RDMCreator distance='pearson')"}))

"""RSA on arrays: ``rdm``, ``compare`` and ``noise_ceiling`` for users' own matrices (numpy or torch), in the
convention of the library named (``analysis.align.registry.CONVENTIONS``)."""

from __future__ import annotations

import numpy as np

from analysis.align.registry import get_comparison, get_convention, get_rdm_method
from analysis.align.vectors import RdmError, check_rdm_stack, condensed


def as_float64(x) -> np.ndarray:
    """numpy or torch (any float dtype, any device) as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.double().numpy() if x.is_floating_point() else x.numpy()
    return np.asarray(x, dtype=np.float64)


def standardize_features(x: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Each feature z-scored over stimuli: (x − mean) / (std + eps), std with ddof 0 (Net2Brain's
    ``standardize(dim=0)``; a constant feature becomes 0)."""
    return (x - x.mean(axis=0)) / (x.std(axis=0) + eps)


def average_by(x: np.ndarray, conditions) -> tuple[np.ndarray, np.ndarray]:
    """Rows averaged per condition, conditions sorted (rsatoolbox's ``average_dataset_by``)."""
    conds, idx = np.unique(np.asarray(conditions), return_inverse=True)
    sums = np.zeros((len(conds), x.shape[1]))
    np.add.at(sums, idx, x)
    return sums / np.bincount(idx, minlength=len(conds))[:, None], conds


def rdm(features, method: str = "correlation", convention: str = "rsatoolbox", *, standardize: bool = False,
        conditions=None, runs=None, noise=None) -> np.ndarray:
    """The N × N RDM of ``features`` (stimuli × features, any trailing shape is flattened), in float64.

    ``conditions``: a label per row; rows of one condition are averaged (and rows of the result follow the
    sorted labels), as rsatoolbox's ``calc_rdm(..., descriptor=...)``. ``crossnobis`` needs ``conditions``
    and ``runs`` (independent measurements); ``noise`` is its precision matrix.

    Example::

        d = rdm(feats, "euclidean")                   # rsatoolbox: squared distance / channels
        d = rdm(feats, "correlation", "net2brain", standardize=True)
    """
    m = get_rdm_method(method)
    get_convention(convention)
    x = as_float64(features)
    x = x.reshape(len(x), -1)
    if standardize:
        x = standardize_features(x)
    if m.needs_runs:
        return m.compute(x, convention, conditions=conditions, runs=runs, noise=noise)
    if conditions is not None:
        x, _ = average_by(x, conditions)
    if len(x) < 3:
        raise RdmError(f"{len(x)} stimuli; an RDM for RSA needs at least 3")
    return m.compute(x, convention)


def _pair_vectors(a, b) -> tuple[np.ndarray, np.ndarray]:
    va = np.atleast_2d(condensed(as_float64(a)))
    vb = np.atleast_2d(condensed(as_float64(b)))
    if va.shape[-1] != vb.shape[-1]:
        raise RdmError(f"RDMs of different sizes: {va.shape[-1]} and {vb.shape[-1]} dissimilarities")
    keep = np.isfinite(va).all(axis=0) & np.isfinite(vb).all(axis=0)
    return va[:, keep], vb[:, keep]


def compare(rdm_a, rdm_b, method: str = "spearman") -> float | np.ndarray:
    """The similarity of two RDMs (square or condensed); stacks give a (k, s) matrix. Pairs that are NaN in
    either are left out (rsatoolbox's convention for missing dissimilarities).

    Example::

        compare(model_rdm, brain_rdm, "spearman")
    """
    cmp = get_comparison(method)
    va, vb = _pair_vectors(rdm_a, rdm_b)
    out = cmp.score(va, vb)
    return float(out[0, 0]) if out.shape == (1, 1) else out


def ceiling_pool(vectors: np.ndarray, method: str, convention: str) -> np.ndarray:
    """The reference RDM of a set of subjects' RDMs: rsatoolbox pools them for the method (``pool_rdm``),
    Net2Brain takes their mean."""
    if get_convention(convention).ceiling_pool == "mean":
        return vectors.mean(axis=0)
    return get_comparison(method).pool(vectors)


_CEILINGS: dict[tuple, tuple[float, float]] = {}  #: by the stack's content: a sweep's runs share their targets
_MAX_CEILINGS = 64


def noise_ceiling(rdms, method: str = "spearman", convention: str = "rsatoolbox") -> tuple[float, float]:
    """``_noise_ceiling``, computed once per stack content, method and convention in a process (every run of
    an RSA sweep asks for the same targets' ceilings)."""
    import hashlib

    a = np.ascontiguousarray(as_float64(rdms))
    key = (hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest(), a.shape, method, convention)
    if key not in _CEILINGS:
        if len(_CEILINGS) >= _MAX_CEILINGS:
            _CEILINGS.pop(next(iter(_CEILINGS)))
        _CEILINGS[key] = _noise_ceiling(a, method, convention)
    return _CEILINGS[key]


def _noise_ceiling(rdms, method: str = "spearman", convention: str = "rsatoolbox") -> tuple[float, float]:
    """(lower, upper) noise ceiling of a subjects × N × N stack (or subjects × condensed).

    Lower: each subject against the pooled RDM of the others; upper: against the pooled RDM of all; each the
    mean over subjects (rsatoolbox ``boot_noise_ceiling``; with ``convention="net2brain"`` the plain mean RDM
    and squared scores, as Net2Brain's ``NoiseCeiling``).
    """
    stack = check_rdm_stack(as_float64(rdms), "noise_ceiling")
    v = condensed(stack)
    if len(v) < 2:
        raise RdmError("a noise ceiling needs the RDMs of at least 2 subjects")
    keep = np.isfinite(v).all(axis=0)
    v = v[:, keep]
    cmp = get_comparison(method)
    squared = get_convention(convention).squared
    lower, upper = [], []
    ref_all = ceiling_pool(v, method, convention)
    for i in range(len(v)):
        others = np.delete(v, i, axis=0)
        lo = cmp.score(ceiling_pool(others, method, convention)[None], v[i:i + 1])[0, 0]
        up = cmp.score(ref_all[None], v[i:i + 1])[0, 0]
        lower.append(lo ** 2 if squared else lo)
        upper.append(up ** 2 if squared else up)
    return float(np.mean(lower)), float(np.mean(upper))

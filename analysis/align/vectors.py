"""RDMs as square matrices or condensed vectors (the upper triangle, row by row, as scipy's ``squareform`` and
rsatoolbox's ``get_vectors``), average ranks, and checks of user-supplied RDMs."""

from __future__ import annotations

import math

import numpy as np
import torch

from shards.errors import ActlakeError


class RdmError(ActlakeError, ValueError):
    """An RDM (or a stack of them) is not what RSA needs."""


def n_from_length(m: int) -> int:
    """Stimuli of a condensed RDM of ``m`` entries (m = n(n−1)/2)."""
    n = int(round((1 + math.sqrt(1 + 8 * m)) / 2))
    if n * (n - 1) // 2 != m:
        raise RdmError(f"a condensed RDM of {m} entries is not the upper triangle of any square matrix "
                       "(n(n-1)/2 entries for n stimuli)")
    return n


def condensed(rdms: np.ndarray) -> np.ndarray:
    """``(..., N, N)`` square RDMs or ``(..., M)`` condensed ones as ``(..., M)`` float64 vectors of the upper
    triangle (row by row)."""
    a = np.asarray(rdms, dtype=np.float64)
    if a.ndim >= 2 and a.shape[-1] == a.shape[-2] and a.shape[-1] > 1:
        i, j = np.triu_indices(a.shape[-1], 1)
        return a[..., i, j]
    n_from_length(a.shape[-1])
    return a


def square(vec: np.ndarray) -> np.ndarray:
    """A condensed ``(M,)`` (or ``(k, M)``) RDM as ``(N, N)`` (or ``(k, N, N)``) with a zero diagonal."""
    v = np.asarray(vec, dtype=np.float64)
    n = n_from_length(v.shape[-1])
    out = np.zeros((*v.shape[:-1], n, n))
    i, j = np.triu_indices(n, 1)
    out[..., i, j] = v
    out[..., j, i] = v
    return out


def average_ranks(v: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(v)`` (ties get their average rank) for a 1-D float vector.

    Written here because torch's multithreaded sort is ~3.6x faster than rankdata on the 12.5M entries of a
    5,000-stimulus RDM (docs/benchmarks.md); the tie handling is rankdata's.
    """
    v = np.ascontiguousarray(v, dtype=np.float64)
    n = v.shape[0]
    if n == 0:
        return np.empty(0)
    sorted_v, order = torch.sort(torch.from_numpy(v))
    s = sorted_v.numpy()
    order = order.numpy()
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    if len(starts) == n:  # no ties
        ranks = np.empty(n)
        ranks[order] = np.arange(1, n + 1, dtype=np.float64)
        return ranks
    ends = np.append(starts[1:], n)
    group_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(n)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def check_rdm_stack(rdms: np.ndarray, what: str) -> np.ndarray:
    """A brain RDM stack as ``(subjects, N, N)`` float64, refusing what cannot be an RDM."""
    a = np.asarray(rdms, dtype=np.float64)
    if a.ndim == 1:
        a = square(a)[None]
    elif a.ndim == 2 and a.shape[0] != a.shape[1]:
        try:
            a = square(a)  # subjects x condensed
        except RdmError:
            raise RdmError(f"{what}: shape {a.shape} is neither an N x N RDM nor subjects x condensed RDMs") from None
    elif a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise RdmError(f"{what}: shape {a.shape}; expected N x N, subjects x N x N or condensed RDMs")
    if a.shape[1] != a.shape[2]:
        if a.shape[0] == a.shape[1]:
            raise RdmError(f"{what}: shape {a.shape} puts the subject axis last; RDM stacks are subjects x N x N "
                           "(move the axis: np.moveaxis(a, -1, 0), or pass --subject-axis 2)")
        raise RdmError(f"{what}: RDMs of shape {a.shape[1:]} are not square")
    if a.shape[1] < 3:
        raise RdmError(f"{what}: {a.shape[1]} stimuli; RSA needs at least 3")
    return a


def asymmetry(rdms: np.ndarray) -> float:
    """Largest |d_ij − d_ji| relative to the largest |d| (0 for a symmetric stack)."""
    finite = np.where(np.isfinite(rdms), rdms, 0.0)
    scale = max(float(np.abs(finite).max()), 1e-300)
    return float(np.abs(finite - np.swapaxes(finite, -1, -2)).max() / scale)

"""The deterministic read plan: which rows a rank reads, in what order.

An epoch's order is a pure function of (seed, epoch, rank, world_size,
window): row groups are permuted with a seeded generator, the concatenated
rows are split contiguously into ``world_size`` equal parts (so every row
goes to exactly one rank), and each rank's part is cut into windows of
``window`` rows whose rows are permuted again in memory. A cursor is the
number of rows of the rank's sequence already delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rng_for(*keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in keys])))


@dataclass(frozen=True)
class Slice:
    """Rows [start, stop) of row group ``group`` (an index into the dataset's row groups)."""

    group: int
    start: int
    stop: int


@dataclass
class RankPlan:
    """One rank's rows for one epoch, as slices of row groups in reading order."""

    slices: list[Slice]
    num_rows: int

    def window_slices(self, lo: int, hi: int) -> list[Slice]:
        """Slices covering rows [lo, hi) of this rank's sequence."""
        out, pos = [], 0
        for s in self.slices:
            n = s.stop - s.start
            a, b = max(lo, pos), min(hi, pos + n)
            if a < b:
                out.append(Slice(s.group, s.start + a - pos, s.start + b - pos))
            pos += n
            if pos >= hi:
                break
        return out


def plan_rank(group_rows: np.ndarray, shuffle: bool, seed: int, epoch: int, rank: int,
              world_size: int) -> RankPlan:
    """Row-group order for the epoch, then rank ``rank``'s contiguous share of it."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    n_groups = len(group_rows)
    order = rng_for(seed, epoch).permutation(n_groups) if shuffle else np.arange(n_groups)
    total = int(group_rows.sum())
    lo, hi = rank * total // world_size, (rank + 1) * total // world_size
    slices, pos = [], 0
    for g in order:
        n = int(group_rows[g])
        a, b = max(lo, pos), min(hi, pos + n)
        if a < b:
            slices.append(Slice(int(g), a - pos, b - pos))
        pos += n
        if pos >= hi:
            break
    return RankPlan(slices, hi - lo)


def window_permutation(n: int, shuffle: bool, seed: int, epoch: int, rank: int, window_index: int) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    return rng_for(seed, epoch, rank, window_index, 0x5EED).permutation(n)

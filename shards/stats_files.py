"""The merged statistics files (``stats/<hook>.npz``): read with a named error, checked against the manifest."""

from __future__ import annotations

import zipfile

import numpy as np

from shards.errors import CorruptDataError
from shards.layout import stats_path
from shards.stats import HookStats
from shards.storage import Storage
from shards.unit_table import IdDigest


def read_stats_file(storage: Storage, hook: str, path: str | None = None) -> tuple[HookStats, object]:
    """A hook's merged statistics and the unit ids merged into them (a list, or an ``IdDigest``).

    FileNotFoundError when the file is absent; CorruptDataError naming it when it cannot be parsed
    (truncated, garbled): writers then rebuild it from the commit records, ``actlake verify --repair`` too.
    """
    rel = path or stats_path(hook)  # a v2 manifest names its version's file; v1 has one file per hook
    data = storage.get_bytes(rel)
    try:
        return HookStats.from_npz_bytes(data)
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise CorruptDataError(f"{storage.display(rel)} is damaged ({problem}); `actlake verify --repair "
                               f"{storage.display()}` rebuilds it from the commit records", problem) from None


def covers(units, committed, digest: IdDigest | None = None) -> bool:
    """Whether a statistics file's units (a list, or an ``IdDigest``) are exactly ``committed`` (ids; their
    ``digest`` when the caller has it)."""
    if isinstance(units, IdDigest):
        return units.same(digest if digest is not None else IdDigest.of(np.asarray(list(committed), dtype=np.int64)))
    return list(units) == sorted(committed)


def check_stats_file(storage: Storage, hook: str, committed, path: str | None = None,
                     digest: IdDigest | None = None) -> str | None:
    """What is wrong with a hook's statistics file, or None when it covers exactly the committed units (ids;
    their ``digest`` when the caller has it)."""
    try:
        _stats, units = read_stats_file(storage, hook, path)
    except FileNotFoundError:
        return "missing" if len(committed) else None
    except CorruptDataError as exc:
        return f"damaged: {exc.problem}"
    if not covers(units, committed, digest):
        n = units.count if isinstance(units, IdDigest) else len(units)
        if n == len(committed):  # the same number of units, other copies: a unit was rewritten after them
            return ("describes other copies of the units than the version's (a unit rewritten after the statistics "
                    "were merged: stale)")
        return f"covers {n} units, the manifest lists {len(committed)} (stale or damaged)"
    return None

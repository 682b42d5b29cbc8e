"""The merged statistics files (``stats/<hook>.npz``): read with a named error, checked against the manifest."""

from __future__ import annotations

import zipfile

from shards.errors import CorruptDataError
from shards.layout import stats_path
from shards.stats import HookStats
from shards.storage import Storage


def read_stats_file(storage: Storage, hook: str, path: str | None = None) -> tuple[HookStats, list[int]]:
    """A hook's merged statistics and the unit ids merged into them.

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


def check_stats_file(storage: Storage, hook: str, committed: list[int], path: str | None = None) -> str | None:
    """What is wrong with a hook's statistics file, or None when it covers exactly the committed units."""
    try:
        _stats, units = read_stats_file(storage, hook, path)
    except FileNotFoundError:
        return "missing" if committed else None
    except CorruptDataError as exc:
        return f"damaged: {exc.problem}"
    if units != sorted(committed):
        return f"covers {len(units)} units, the manifest lists {len(committed)} (stale or damaged)"
    return None

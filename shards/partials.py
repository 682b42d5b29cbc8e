"""A unit's own statistics ("partials"), which merge into a version's (Chan et al.'s parallel update).

Format v4 keeps them in the unit file's footer (key ``actlake.stats``: ``{hook: HookStats.to_json()}``), written
with the file and immutable like it, so the partials of every copy of every unit stay readable whatever later
versions do. Its commit record, which held them before, is removed once a version names the unit (a writer that
opens then lists only what a killed writer left). Units written before v4 have them in their kept commit record
(``_commits/``); failing both (a copy of an old file, a record lost), they are computed from the file's values,
exactly as the unit writer computes them.

Statistics files are written every few hundred units (``shards.writer``); a version between two reads the last
file and merges the partials of the units added since (``merge``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pyarrow.parquet as pq

from shards.layout import unit_commit_path
from shards.parallel import in_parallel
from shards.stats import HookStats
from shards.storage import Storage

STATS_KEY = "actlake.stats"  #: the unit file footer's key holding its statistics (format v4)


def footer_stats(storage: Storage, path: str) -> dict[str, HookStats] | None:
    """The statistics a unit file's footer holds; None for a file written before format v4."""
    with storage.open_input(path) as f:
        meta = pq.ParquetFile(f).metadata.metadata or {}
    raw = meta.get(STATS_KEY.encode())
    if raw is None:
        return None
    return {h: HookStats.from_json(s) for h, s in json.loads(raw).items()}


def unit_partials(storage: Storage, unit, schema) -> dict[str, HookStats]:
    """The statistics of one unit (a ``UnitEntry``) per hook of ``schema``: its footer's, else its kept commit
    record's (when that names this copy), else computed from its values."""
    stats = storage.call("read", unit.path, lambda: footer_stats(storage, unit.path))
    if stats is not None and set(schema.hooks) <= set(stats):
        return {h: stats[h] for h in schema.hooks}
    try:  # read as JSON here: shards.commits sits above this module
        record = json.loads(storage.get_bytes(unit_commit_path(unit.id)))
        if record.get("path") == unit.path and set(schema.hooks) <= set(record.get("stats") or {}):
            return {h: HookStats.from_json(record["stats"][h]) for h in schema.hooks}
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    return _computed(storage, unit, schema)


def _computed(storage: Storage, unit, schema) -> dict[str, HookStats]:
    from shards.codecs import get_codec

    with storage.open_input(unit.path) as f:
        table = pq.ParquetFile(f).read(columns=list(schema.hooks))
    return {h: HookStats.from_storage(get_codec(spec.encoding).decode(spec, table.column(h)), spec.dtype)
            for h, spec in schema.hooks.items()}


def all_partials(storage: Storage, units: Iterable, schema) -> list[dict[str, HookStats]]:
    """``unit_partials`` of many units, read 16 at a time (object stores answer in parallel), in order."""
    return in_parallel(lambda u: unit_partials(storage, u, schema), list(units), pool="partials")


def version_stats(storage: Storage, stats_files: dict[str, str], pending, schema) -> dict[str, HookStats]:
    """A version's statistics per hook: its statistics files (``stats_files``) with the units added since
    (``pending``: (id, path, checksum)) merged in. FileNotFoundError / CorruptDataError naming a file."""
    from shards.stats_files import read_stats_file

    base = {h: read_stats_file(storage, h, p)[0] for h, p in stats_files.items() if h in schema.hooks}
    if not pending:
        return base
    return merge(base, all_partials(storage, [PendingUnit(*p) for p in pending], schema))


class PendingUnit:
    """A unit as ``stats_pending`` names it: enough to find its own statistics."""

    def __init__(self, id: int, path: str, checksum: str = "") -> None:  # noqa: A002 - a unit's field name
        self.id, self.path, self.checksum = int(id), str(path), str(checksum)


def merge(base: dict[str, HookStats], partials: list[dict[str, HookStats]]) -> dict[str, HookStats]:
    """``base`` (a version's statistics per hook) with the units' ``partials`` merged in."""
    out = dict(base)
    for part in partials:
        for h, s in part.items():
            out[h] = out[h].merge(s) if h in out else s
    return out

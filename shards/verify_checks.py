"""The checks ``verify`` and ``verify --since`` share: the report, one unit file against its entry, the commit
records against a version's units, and the log entries above the latest."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from shards.checksums import checksum
from shards.cleanup import readable_records, record_ids
from shards.errors import CorruptDataError, CorruptManifestError
from shards.integrity import check_footer
from shards.layout import MANIFEST, record_path, unit_commit_path
from shards.manifest import Manifest, UnitEntry
from shards.storage import Storage
from shards.versionlog import log_path

RECORDS_AT_ONCE = 4096  # commit records parsed at a time by verify (bounded memory at any unit count)


@dataclass
class VerifyReport:
    """What ``verify_dataset`` found (and, with repair, did)."""

    uri: str
    units_checked: int = 0
    versions_checked: list[int] = field(default_factory=list)  #: every kept version, the latest included
    bad: dict[str, list[str]] = field(default_factory=dict)  #: unit file -> problems
    records: dict[str, str] = field(default_factory=dict)  #: commit record -> problem
    stats: dict[str, str] = field(default_factory=dict)  #: stats file -> problem
    versions: dict[str, str] = field(default_factory=dict)  #: kept version file -> problem (damaged, rewritten)
    #: older versions' statistics files that are damaged: derived data, reported but not failing the check (a
    #: reader pinned to that version gets a clear error from ``Dataset.stats``; its rows are unaffected)
    old_stats: dict[str, str] = field(default_factory=dict)
    #: damaged unit files only older versions name, whose units a later version dropped (`verify --repair
    #: --drop-damaged`, `drop`): the latest is intact and readers pinned to those versions get a clear error;
    #: reported, not failing the check (``vacuum`` removes them with those versions)
    old_bad: dict[str, list[str]] = field(default_factory=dict)
    #: damaged files in ``bad`` that only older versions name (a unit rewritten or replaced since): the latest
    #: is intact; failing all the same, since readers pinned to those versions lose rows
    old_only: set[str] = field(default_factory=set)
    garbage: list[str] = field(default_factory=list)  #: unit files no commit record names, temp files
    uncommitted_records: list[str] = field(default_factory=list)  #: commit records the manifest lacks
    removed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  #: what repair rebuilt or dropped
    notes: list[str] = field(default_factory=list)  #: what was not checked, and why

    @property
    def ok(self) -> bool:
        return not (self.bad or self.records or self.stats or self.versions)

    def lines(self) -> list[str]:
        out = [f"{f}: {'; '.join(p)}" + (" (only older versions name it; the latest version is intact: restore the "
                                        "file, or `actlake vacuum URI --keep N` removes those versions and it)"
                                        if f in self.old_only else "") for f, p in sorted(self.bad.items())]
        out += [f"{f}: {p}" for f, p in sorted({**self.records, **self.stats, **self.versions}.items())]
        if any("damaged" in p for p in self.versions.values()):
            out.append("damaged kept versions: `actlake verify --repair` sets them aside (they can no longer be read)")
        if any(p.startswith("rewritten") for p in self.versions.values()):
            out.append("a version's record was rewritten after it was committed: no repair can tell its true content; "
                       "put the original file back (a backup, or the same path in a copy of the dataset), or "
                       "`actlake copy URI@vN NEW` a version whose chain is intact to a new dataset")
        out += [f"{f}: {p} (statistics of an older version; its rows are intact)" for f, p in self.old_stats.items()]
        out += [f"{f}: {'; '.join(p)} (named only by versions before its unit was dropped; the latest version is "
                "intact: `actlake vacuum URI --keep N` removes those versions and this file)"
                for f, p in sorted(self.old_bad.items())]
        if self.stats:
            out.append("damaged statistics: `actlake verify --repair` rebuilds them from the commit records")
        out += [f"{g}: not committed (garbage; `actlake verify --repair` removes it)"
                for g in self.garbage if g not in self.removed]
        out += [f"{r}: committed but not yet in the manifest (a writer died; reopen in append mode to fold it)"
                for r in self.uncommitted_records]
        out += [f"{r}: removed" for r in self.removed] + [f"repaired: {r}" for r in self.repaired]
        return out + [f"note: {n}" for n in self.notes]


def _check_unit(storage: Storage, unit: UnitEntry, arrow_schema, checksums: bool) -> list[str]:
    rel = unit.path
    try:
        size = storage.size(rel)
    except FileNotFoundError:
        return ["missing"]
    problems = []
    if size != unit.bytes:
        problems.append(f"size {size} != manifest {unit.bytes}")
    data = storage.get_bytes(rel) if checksums else None  # otherwise only the footer is read
    if data is not None:
        got = checksum(data)
        if got != unit.checksum:
            problems.append(f"checksum {got} != manifest {unit.checksum}")
    try:
        pf = pq.ParquetFile(pa.BufferReader(data)) if data is not None else pq.ParquetFile(storage.open_input(rel))
        try:
            check_footer(pf.metadata, None, unit, rel)
        except CorruptDataError as exc:
            problems.append(exc.problem)
        if not pf.schema_arrow.remove_metadata().equals(arrow_schema.remove_metadata()):
            problems.append("schema differs from the manifest's")
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad unit
        problems.append(f"unreadable Parquet ({type(exc).__name__}: {exc})")
    return problems


def _check_records(storage: Storage, manifest: Manifest, report: VerifyReport, lookup=None) -> set[str]:
    """The commit records, and the unit files they name. Pending ones (format v4): a unit the manifest lacks is
    committed but not yet in a version (a writer died: the next one folds it); one the manifest names is folded and
    merely not yet removed. Kept ones (formats v1-v3, ``_commits/``) must agree with the manifest, and before v4
    every unit had one. Records of a dataset an overwrite replaced, and second attempts at committed units, are
    garbage: never folded."""
    lookup = lookup or _unit_lookup(manifest)
    paths: set[str] = set()
    for legacy in (False, True):
        ids = record_ids(storage, legacy)
        for start in range(0, len(ids), RECORDS_AT_ONCE):  # in chunks: a parsed record weighs ~2 KB
            records, bad = readable_records(storage, ids[start:start + RECORDS_AT_ONCE], legacy)
            report.records.update(bad)
            for r in records:
                rel, listed = record_path(r.id, legacy), lookup(r.id)
                if not r.belongs_to(manifest):
                    report.garbage.append(rel)
                elif listed is None:
                    paths.add(r.unit.path)
                    report.uncommitted_records.append(rel)
                elif listed == (r.unit.checksum, r.unit.rows):
                    paths.add(r.unit.path)
                elif legacy and manifest.format_version < 4:
                    report.records[rel] = "disagrees with the manifest (checksum or rows)"
                elif not legacy:  # a rewrite of a committed unit by a writer that died before its version
                    paths.add(r.unit.path)
                    report.uncommitted_records.append(rel)
        if legacy and manifest.format_version < 4:
            present = set(ids)
            for uid in (u.id for u in manifest.units if u.id not in present):
                report.records[unit_commit_path(uid)] = "missing (the manifest lists this unit)"
    return paths


def _unit_lookup(manifest: Manifest):
    """``id -> (checksum, rows)`` of the manifest's units, or None: from the unit list's columns (no entry object
    per unit: bounded memory at a million units)."""
    import numpy as np

    from shards.unit_table import UnitTable

    units = manifest.units.loaded() if hasattr(manifest.units, "loaded") else manifest.units
    table = units if isinstance(units, UnitTable) else UnitTable.from_entries(units)
    ids = table.ids
    checksums, rows = table.table.column("checksum"), table.table.column("rows")

    def lookup(uid: int):
        i = int(np.searchsorted(ids, uid))
        if i < len(ids) and ids[i] == uid:
            return str(checksums[i].as_py()), int(rows[i].as_py())
        return None

    return lookup


def _check_units(storage: Storage, units: list[UnitEntry], arrow_schema, report: VerifyReport, checked: set[str],
                 checksums: bool, threads: int) -> None:
    todo = [u for u in units if u.path not in checked]
    checked.update(u.path for u in todo)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda u: _check_unit(storage, u, arrow_schema, checksums), todo))
    for unit, problems in zip(todo, results, strict=True):
        report.units_checked += 1
        if problems:
            report.bad[unit.path] = problems


def _entries_ahead_problems(storage: Storage, latest: int | None = None) -> dict[str, str]:
    """The log entries after the latest version (``latest``; by default the root's) from the first that cannot be
    read or does not follow the one before (damaged or planted: since format v4 an entry after the root is a
    committed version, so it blocks the latest), with what is wrong; empty when the root cannot be read."""
    from shards.versionlog import follows, list_log_versions, read_log

    if storage.read_only:
        return {}
    try:
        root_version = int(json.loads(storage.get_bytes(MANIFEST))["version"]) if latest is None else latest
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return {}
    out: dict[str, str] = {}
    expected = root_version + 1
    for v in (v for v in list_log_versions(storage) if v > root_version):
        if out:
            out[log_path(v)] = f"follows the damaged version {min(out)} (set aside with it by `verify --repair`)"
            continue
        try:
            entry = read_log(storage, v)[0]
            if v != expected or not follows(entry, v - 1):
                out[log_path(v)] = (f"not part of the history: the latest version is {expected - 1}, this entry "
                                    f"says version {entry.version} follows {entry.base} (planted, or left by a "
                                    "writer that lost its version number)")
        except CorruptManifestError as exc:
            out[log_path(v)] = f"damaged: {str(exc).split('. `actlake')[0]}"
        expected = v + 1
    return out

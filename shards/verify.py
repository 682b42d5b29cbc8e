"""Checking a dataset's files against its manifest, and removing garbage."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from shards.checksums import checksum
from shards.layout import COMMITS_DIR, DATA_DIR, parse_unit_name, unit_commit_path
from shards.lock import WriteLock
from shards.manifest import UnitEntry, read_manifest
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.verify")


@dataclass
class VerifyReport:
    """What ``verify_dataset`` found."""

    uri: str
    units_checked: int = 0
    bad: dict[str, list[str]] = field(default_factory=dict)  #: file -> problems
    garbage: list[str] = field(default_factory=list)  #: files no commit record names
    uncommitted_records: list[str] = field(default_factory=list)  #: commit records the manifest lacks
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    def lines(self) -> list[str]:
        out = [f"{f}: {'; '.join(p)}" for f, p in sorted(self.bad.items())]
        out += [f"{g}: not committed (garbage; `actlake verify --repair` removes it)"
                for g in self.garbage if g not in self.removed]
        out += [f"{r}: committed but not yet in the manifest (a writer died; reopen in append mode to fold it)"
                for r in self.uncommitted_records]
        out += [f"{r}: removed" for r in self.removed]
        return out


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
        if pf.metadata.num_rows != unit.rows:
            problems.append(f"{pf.metadata.num_rows} rows != manifest {unit.rows}")
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        if groups != list(unit.row_groups) and unit.rows:
            problems.append(f"row groups {groups} != manifest {list(unit.row_groups)}")
        if not pf.schema_arrow.remove_metadata().equals(arrow_schema.remove_metadata()):
            problems.append("schema differs from the manifest's")
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad unit
        problems.append(f"unreadable Parquet ({type(exc).__name__}: {exc})")
    return problems


def verify_dataset(uri: str, storage_options: StorageOptions | dict | None = None, checksums: bool = True,
                   repair: bool = False, threads: int = 4) -> VerifyReport:
    """Check every committed unit (existence, size, checksum, rows, schema) and find garbage.

    With ``repair``, files in ``data/`` that no commit record names (left by
    crashed writers) are deleted; committed data is never touched.
    """
    storage = Storage(uri, storage_options)
    manifest = read_manifest(storage)
    arrow_schema = manifest.schema.arrow_schema()
    report = VerifyReport(storage.display())
    units = manifest.units
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda u: _check_unit(storage, u, arrow_schema, checksums), units))
    for unit, problems in zip(units, results, strict=True):
        report.units_checked += 1
        if problems:
            report.bad[unit.path] = problems
    committed_ids = {u.id for u in units}
    record_ids = {i for i in (parse_unit_name(f) for f in storage.list(COMMITS_DIR)) if i is not None}
    report.uncommitted_records = [unit_commit_path(i) for i in sorted(record_ids - committed_ids)]
    named = committed_ids | record_ids
    for f in storage.list(DATA_DIR):
        uid = parse_unit_name(f)
        if uid is None or uid not in named:
            report.garbage.append(f"{DATA_DIR}/{f}")
    if repair and report.garbage:
        # A live writer's in-flight files look like garbage: repair only under the write lock
        # (a dead writer's stale lock is taken over, a live one refuses with DatasetLockedError).
        lock = WriteLock(storage)
        lock.acquire()
        try:
            for g in report.garbage:
                storage.delete(g)
                report.removed.append(g)
                log.info("removed %s", g)
        finally:
            lock.release()
    return report

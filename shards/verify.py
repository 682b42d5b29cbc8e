"""Checking a dataset against its manifest, and repairing what can be repaired without losing data.

``verify_dataset`` checks every committed unit (exists, size, checksum, footer: rows, row groups,
example ids, schema), every commit record (parses, names its own unit file, agrees with the manifest),
every statistics file (parses, covers exactly the committed units), and lists garbage. With ``repair``
it works under the write lock, so a writer cannot commit between the listing and a deletion: it
rebuilds a missing or damaged manifest and damaged statistics from the commit records, removes garbage
(only names the format makes: ``shards.cleanup``) and, with ``drop_damaged``, uncommits damaged units so
that a rerun of the job writes them again. What repair may delete is listed in docs/format.md.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from shards.checksums import checksum
from shards.cleanup import garbage, readable_records, record_ids
from shards.errors import CorruptDataError, CorruptManifestError, DatasetNotFoundError
from shards.integrity import check_footer
from shards.layout import unit_commit_path, version_path
from shards.manifest import ArtifactEntry, Manifest, UnitEntry, read_manifest
from shards.stats_files import check_stats_file
from shards.storage import Storage, StorageOptions
from shards.versions import chain_problems, read_kept

log = logging.getLogger("actlake.verify")


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
    garbage: list[str] = field(default_factory=list)  #: unit files no commit record names, temp files
    uncommitted_records: list[str] = field(default_factory=list)  #: commit records the manifest lacks
    removed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  #: what repair rebuilt or dropped

    @property
    def ok(self) -> bool:
        return not (self.bad or self.records or self.stats or self.versions)

    def lines(self) -> list[str]:
        out = [f"{f}: {'; '.join(p)}" for f, p in sorted(self.bad.items())]
        out += [f"{f}: {p}" for f, p in sorted({**self.records, **self.stats, **self.versions}.items())]
        if any("damaged" in p for p in self.versions.values()):
            out.append("damaged kept versions: `actlake verify --repair` sets them aside (they can no longer be read)")
        out += [f"{f}: {p} (statistics of an older version; its rows are intact)" for f, p in self.old_stats.items()]
        if self.stats:
            out.append("damaged statistics: `actlake verify --repair` rebuilds them from the commit records")
        out += [f"{g}: not committed (garbage; `actlake verify --repair` removes it)"
                for g in self.garbage if g not in self.removed]
        out += [f"{r}: committed but not yet in the manifest (a writer died; reopen in append mode to fold it)"
                for r in self.uncommitted_records]
        out += [f"{r}: removed" for r in self.removed] + [f"repaired: {r}" for r in self.repaired]
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
        try:
            check_footer(pf.metadata, None, unit, rel)
        except CorruptDataError as exc:
            problems.append(exc.problem)
        if not pf.schema_arrow.remove_metadata().equals(arrow_schema.remove_metadata()):
            problems.append("schema differs from the manifest's")
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad unit
        problems.append(f"unreadable Parquet ({type(exc).__name__}: {exc})")
    return problems


def _check_records(storage: Storage, manifest: Manifest, report: VerifyReport) -> set[str]:
    """Every commit record parses and agrees with the manifest; the unit files the records name."""
    ids = record_ids(storage)
    records, bad = readable_records(storage, ids)
    report.records.update(bad)
    listed = {u.id: u for u in manifest.units}
    for r in records:
        entry = listed.get(r.id)
        if entry is not None and (entry.checksum, entry.rows) != (r.unit.checksum, r.unit.rows):
            report.records[unit_commit_path(r.id)] = "disagrees with the manifest (checksum or rows)"
    missing = sorted(set(listed) - set(ids))
    for uid in missing:
        report.records[unit_commit_path(uid)] = "missing (the manifest lists this unit)"
    report.uncommitted_records = [unit_commit_path(r.id) for r in records if r.id not in listed]
    return {r.unit.path for r in records}


def _check_version(storage: Storage, manifest: Manifest, report: VerifyReport, checked: set[str], checksums: bool,
                   threads: int, latest: bool = True) -> None:
    """The files one version names that no newer version already had checked: units, statistics, artifacts."""
    arrow_schema = manifest.schema.arrow_schema()
    units = [u for u in manifest.units if u.path not in checked]
    checked.update(u.path for u in units)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda u: _check_unit(storage, u, arrow_schema, checksums), units))
    for unit, problems in zip(units, results, strict=True):
        report.units_checked += 1
        if problems:
            report.bad[unit.path] = problems
    committed = sorted(u.id for u in manifest.units)
    for hook in manifest.hooks:
        path = manifest.stats_files.get(hook)
        if (path or f"stats/{hook}.npz") in checked:
            continue
        checked.add(path or f"stats/{hook}.npz")
        problem = check_stats_file(storage, hook, committed, path)
        if problem:
            (report.stats if latest else report.old_stats)[path or f"stats/{hook}.npz"] = problem
    for art in manifest.artifacts.values():
        if art.path not in checked and (problem := _check_artifact(storage, art, checksums)):
            report.bad[art.path] = [problem]
        checked.add(art.path)
    report.versions_checked.append(manifest.version)


def check_dataset(storage: Storage, manifest: Manifest, checksums: bool = True, threads: int = 4,
                  all_versions: bool = True) -> VerifyReport:
    """Everything ``verify_dataset`` checks, for a manifest already read (and, with ``all_versions``, every
    older kept version: each file once); changes nothing."""
    report = VerifyReport(storage.display())
    checked: set[str] = set()
    versions, damaged = read_kept(storage, manifest) if all_versions else ([manifest], {})
    report.versions = {version_path(v): f"damaged: {p}" for v, p in damaged.items()}
    report.versions.update({version_path(v): p for v, p in chain_problems(storage, versions).items()})
    for m in reversed(versions):  # newest first: a damaged file is reported under the path readers use now
        _check_version(storage, m, report, checked, checksums, threads, latest=m is manifest)
    report.versions_checked.sort()
    present = _check_records(storage, manifest, report)
    named = present | {u.path for m in versions for u in m.units}
    report.garbage = garbage(storage, named)
    return report


def _check_artifact(storage: Storage, art: ArtifactEntry, checksums: bool) -> str | None:
    try:
        size = storage.size(art.path)
    except FileNotFoundError:
        return "missing"
    if size != art.bytes:
        return f"size {size} != manifest {art.bytes}"
    if checksums and (got := checksum(storage.get_bytes(art.path))) != art.checksum:
        return f"checksum {got} != manifest {art.checksum}"
    return None


def verify_dataset(uri: str, storage_options: StorageOptions | dict | None = None, checksums: bool = True,
                   repair: bool = False, threads: int = 4, break_lock: bool = False,
                   drop_damaged: bool = False) -> VerifyReport:
    """Check a dataset (see the module docstring); with ``repair``, fix what can be fixed under the write lock.

    ``break_lock`` (with repair) takes the lock even from a live writer; ``drop_damaged`` (with repair)
    uncommits units whose files are missing or damaged so that a rerun writes them again.
    """
    storage = Storage(uri, storage_options)
    if not repair:
        return check_dataset(storage, read_manifest(storage), checksums, threads)
    return _repair(uri, storage, storage_options, checksums, threads, break_lock, drop_damaged)


def _repair(uri: str, storage: Storage, storage_options, checksums: bool, threads: int, break_lock: bool,
            drop_damaged: bool) -> VerifyReport:
    from shards.writer import DatasetWriter

    manifest, rebuilt = _manifest_or_records(storage)
    set_aside = _set_aside_damaged_versions(storage, manifest) if not rebuilt else []
    committed = sorted(u.id for u in manifest.units)
    damaged_stats = [manifest.stats_files.get(h, f"stats/{h}.npz") for h in manifest.hooks
                     if check_stats_file(storage, h, committed, manifest.stats_files.get(h))]
    # The writer holds the lock from here on: the listing below and every deletion see the same files.
    with DatasetWriter(uri, dict(manifest.hooks), dict(manifest.schema.columns), "append",
                       compression=manifest.compression, row_group_bytes=manifest.row_group_bytes,
                       storage_options=storage_options, break_lock=break_lock, rebuild_manifest=rebuilt) as w:
        w.flush()  # what the writer folded when it opened is in the manifest the check reads
        report = check_dataset(storage, w.manifest, checksums, threads)
        if rebuilt:
            report.repaired.append(f"manifest.json rebuilt from {len(w.manifest.units)} commit records")
        report.repaired += [f"{rel} was damaged: set aside as {rel}.damaged (that version can no longer be read)"
                            for rel in set_aside]
        for rel in report.garbage:
            storage.delete(rel)
            report.removed.append(rel)
            log.info("removed %s", rel)
        # The writer rebuilt damaged statistics from the commit records when it opened (and writes them again
        # on close); what was damaged before is reported as repaired.
        report.repaired += [f"{rel} rebuilt from the commit records" for rel in damaged_stats if not rebuilt]
        report.stats = {}
        if drop_damaged and report.bad:
            ids = [u.id for u in w.manifest.units if u.path in report.bad]
            w.drop_units(ids)
            report.repaired += [f"{rel} dropped (rerun the job to write it again)" for rel in sorted(report.bad)]
            dropped = {unit_commit_path(i) for i in ids}
            report.records = {r: p for r, p in report.records.items() if r not in dropped}
            report.bad = {}
    return report


def _set_aside_damaged_versions(storage: Storage, latest: Manifest) -> list[str]:
    """Move kept version files that cannot be read aside (``.damaged``, bytes kept): each reader, `versions`,
    `verify` and `vacuum` then go on with the readable ones. Files of versions ahead of manifest.json (left by a
    writer that died between the two writes) are set aside too when they cannot be read."""
    from shards.layout import parse_version_name

    bad = []
    for f in storage.list(version_path(0).rsplit("/", 1)[0]):
        v = parse_version_name(f)
        if v is None or v == latest.version:
            continue
        try:
            read_manifest(storage, v)
        except (CorruptManifestError, DatasetNotFoundError):
            rel = version_path(v)
            storage.put_bytes(f"{rel}.damaged", storage.get_bytes(rel))
            storage.delete(rel)
            bad.append(rel)
            log.warning("set aside the damaged %s", storage.display(rel))
    return bad


def _manifest_or_records(storage: Storage) -> tuple[Manifest, bool]:
    """The manifest, or (when it is missing or damaged) one standing in for it made from the commit records."""
    try:
        return read_manifest(storage), False
    except (DatasetNotFoundError, CorruptManifestError) as exc:
        records, _bad = readable_records(storage, record_ids(storage))
        if not records:
            raise type(exc)(f"{exc} There are no commit records to rebuild it from.") from None
        schema = max((r.schema for r in records), key=lambda s: sum(r.schema == s for r in records))
        return Manifest("", schema, "", ""), True

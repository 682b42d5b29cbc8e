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

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from shards.checksums import checksum
from shards.cleanup import garbage, readable_records, record_ids
from shards.errors import CorruptDataError, CorruptManifestError, DatasetNotFoundError
from shards.integrity import check_footer
from shards.layout import MANIFEST, PENDING_DIR, record_path, unit_commit_path, version_path
from shards.manifest import ArtifactEntry, Manifest, UnitEntry, parse_manifest, read_manifest
from shards.stats_files import check_stats_file
from shards.storage import Storage, StorageOptions
from shards.versionlog import log_path
from shards.versions import chain_problems, root_problem, walk_versions

log = logging.getLogger("actlake.verify")


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


def _check_records(storage: Storage, manifest: Manifest, report: VerifyReport) -> set[str]:
    """The commit records, and the unit files they name. Pending ones (format v4): a unit the manifest lacks is
    committed but not yet in a version (a writer died: the next one folds it); one the manifest names is folded and
    merely not yet removed. Kept ones (formats v1-v3, ``_commits/``) must agree with the manifest, and before v4
    every unit had one. Records of a dataset an overwrite replaced, and second attempts at committed units, are
    garbage: never folded."""
    lookup = _unit_lookup(manifest)
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
                elif not legacy:
                    report.garbage.append(rel)
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


def _check_view(storage: Storage, view, report: VerifyReport, checked: set[str], checksums: bool, threads: int,
                latest: bool) -> None:
    """The files one version names that no version walked before already had checked: units, statistics,
    artifacts."""
    manifest = view.manifest
    _check_units(storage, view.new_units, manifest.schema.arrow_schema(), report, checked, checksums, threads)
    covered = view.ids  # what the statistics files must cover: the version's units less those added since them
    for uid, _path, sum_ in manifest.stats_pending:
        covered = covered.toggled(uid, added=False, checksum=sum_)
    for hook in manifest.hooks:
        path = manifest.stats_files.get(hook) or f"stats/{hook}.npz"
        if path in checked and not latest:
            continue
        checked.add(path)
        problem = check_stats_file(storage, hook, view.units.keys(), manifest.stats_files.get(hook), covered)
        if problem:
            (report.stats if latest else report.old_stats)[path] = problem
    for art in manifest.artifacts.values():
        if art.path not in checked and (problem := _check_artifact(storage, art, checksums)):
            report.bad[art.path] = [problem]
        checked.add(art.path)
    report.versions_checked.append(view.version)


def check_dataset(storage: Storage, manifest: Manifest, checksums: bool = True, threads: int = 4,
                  all_versions: bool = True) -> VerifyReport:
    """Everything ``verify_dataset`` checks, for a manifest already read (and, with ``all_versions``, every
    older kept version, walked oldest first with one unit list in memory: each file once); changes nothing."""
    report = VerifyReport(storage.display())
    checked: set[str] = set()
    named: set[str] = set()
    walked = []
    dropped: set[int] = set()  #: unit ids a drop (``drop``, ``verify --repair --drop-damaged``) removed
    for view in walk_versions(storage, manifest, None if all_versions and not storage.read_only else []):
        if isinstance(view, tuple):
            v, problem = view
            report.versions[_record_path(storage, v)] = f"damaged: {problem}"
            walked += _link_of_unreadable(storage, v)  # its record may still tell whether the one before changed
            continue
        _check_view(storage, view, report, checked, checksums, threads, latest=view.version == manifest.version)
        named |= {u.path for u in view.new_units}
        _note_drops(storage, view, manifest, dropped)
        walked.append(_ChainLink(view.version, view.entry.previous if view.entry is not None else None,
                                 view.manifest.previous_version, view.manifest.previous_digest))
    for v, problem in chain_problems(storage, walked).items():  # a damaged record is reported as damaged
        report.versions.setdefault(_record_path(storage, v), problem)
    try:
        problem = root_problem(storage, manifest)
    except CorruptManifestError as exc:  # the latest's own log entry (or its chain) is damaged: reported above
        problem = None if report.versions else str(exc)
    if problem is not None:
        report.versions[MANIFEST] = problem
    report.versions_checked.sort()
    _old_only(report, manifest, dropped)
    if storage.read_only:  # a web server: what the manifest names is all there is to read
        report.notes.append("served over HTTP (no listing): the latest version's files were checked; older "
                            "versions, commit records and unnamed files need the store itself")
        return report
    report.versions.update(_entries_ahead_problems(storage, manifest.version))
    present = _check_records(storage, manifest, report)
    report.garbage = [*report.garbage, *garbage(storage, present | named)]
    return report


def _note_drops(storage: Storage, view, latest: Manifest, dropped: set[int]) -> None:
    """Add the units ``view``'s version dropped to ``dropped``. The latest version's view may come from the root
    without its log entry: that entry is read (a drop is often the latest version)."""
    entry = view.entry
    if entry is None and view.version == latest.version:
        from shards.versionlog import read_log

        try:
            entry = read_log(storage, view.version)[0]
        except (CorruptManifestError, FileNotFoundError):  # reported by the chain and root checks
            return
    if entry is not None and entry.commit.get("operation") in ("drop", "repair"):
        dropped.update(entry.removed)


def _old_only(report: VerifyReport, latest: Manifest, dropped: set[int]) -> None:
    """Sort the damaged files the latest version does not name: those of units a drop removed (deliberately: the
    damage was found and dealt with) move to ``old_bad``, a warning; the others (a unit rewritten or replaced since)
    still fail, since readers pinned to those versions lose rows, but are named as old-only (``old_only``)."""
    from shards.layout import parse_data_name

    if not report.bad:
        return
    in_latest = {u.path for u in latest.units} | {a.path for a in latest.artifacts.values()}
    for path in [p for p in report.bad if p not in in_latest]:
        uid = parse_data_name(path.rsplit("/", 1)[-1])
        if uid is not None and uid in dropped:
            report.old_bad[path] = report.bad.pop(path)
        else:
            report.old_only.add(path)


def _link_of_unreadable(storage: Storage, version: int) -> list[_ChainLink]:
    """The chain link of a version whose unit list cannot be rebuilt, from its log entry when that parses."""
    from shards.versionlog import read_log

    try:
        entry, _raw = read_log(storage, version)
    except (CorruptManifestError, FileNotFoundError):
        return []
    return [_ChainLink(version, entry.previous, entry.base, str((entry.previous or {}).get("digest") or ""))]


@dataclass
class _ChainLink:
    """What the chain check needs of a walked version: its ``previous`` link, not its log entry (whose units,
    kept for every version, would hold the whole history in memory)."""

    version: int
    previous: dict | None  # the log entry's ``previous``; None for a version written by format v2
    previous_version: int
    previous_digest: str

    @property
    def entry(self):
        return self if self.previous is not None else None

    @property
    def manifest(self):
        return self


def _record_path(storage: Storage, version: int) -> str:
    """A version's record: its whole manifest (v2) when there is one, else its log entry (format v3 and later)."""
    return version_path(version) if storage.exists(version_path(version)) else log_path(version)


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
        try:
            return check_dataset(storage, read_manifest(storage), checksums, threads)
        except CorruptManifestError as exc:  # a damaged version after the root's: check up to the root, report it
            problems = _entries_ahead_problems(storage)
            if not problems:
                raise
            report = check_dataset(storage, read_manifest(storage, roll=False), checksums, threads)
            report.versions.update(problems)
            log.debug("%s", exc)
            return report
    return _repair(uri, storage, storage_options, checksums, threads, break_lock, drop_damaged)


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


def _set_aside_entries_ahead(storage: Storage) -> list[str]:
    """Repair's first step: set aside (``.damaged``, bytes kept) the log entries after the root that cannot be read
    as its successors. Their units are in commit records: the writer the repair opens folds them."""
    bad = list(_entries_ahead_problems(storage))
    for rel in bad:
        storage.put_bytes(f"{rel}.damaged", storage.get_bytes(rel))
        storage.delete(rel)
        log.warning("set aside %s: it cannot be read as a version after the latest", storage.display(rel))
    return bad


def _set_aside_a_damaged_latest_entry(storage: Storage) -> list[str]:
    """The latest version's own log entry, when it cannot be read, is set aside (bytes kept) with the root that names
    it: the repair's writer then rebuilds the latest from the version before and the latest's commit records, which
    format v4 keeps until the version after (a version that only dropped units is lost with its entry)."""
    from shards.versionlog import read_log

    try:
        version = int(json.loads(storage.get_bytes(MANIFEST))["version"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return []
    rel = log_path(version)
    try:
        read_log(storage, version)
        return []
    except FileNotFoundError:
        return []
    except CorruptManifestError:
        pass
    for path in (rel, MANIFEST):
        storage.put_bytes(f"{path}.damaged", storage.get_bytes(path))
        storage.delete(path)
    log.warning("set aside the damaged log entry of the latest version %s (and the root naming it)",
                storage.display(rel))
    return [rel]


def _repair(uri: str, storage: Storage, storage_options, checksums: bool, threads: int, break_lock: bool,
            drop_damaged: bool) -> VerifyReport:
    from shards.writer import DatasetWriter

    ahead = _set_aside_entries_ahead(storage)
    latest_entry = _set_aside_a_damaged_latest_entry(storage)
    _set_aside_a_root_its_log_disagrees_with(storage)
    manifest, rebuilt = _manifest_or_records(storage)
    damaged_stats = [] if rebuilt else _damaged_stats(storage, manifest)
    # The writer holds the lock from here on: the listing below and every deletion see the same files.
    with DatasetWriter(uri, dict(manifest.hooks), dict(manifest.schema.columns), "append",
                       compression=manifest.compression, row_group_bytes=manifest.row_group_bytes,
                       storage_options=storage_options, break_lock=break_lock, rebuild_manifest=rebuilt) as w:
        w.flush()  # what the writer folded when it opened is in the manifest the check reads
        set_aside = _set_aside_damaged_versions(storage, w.manifest)
        if set_aside:  # the latest's chain may pass through them: a version with a checkpoint of its own, and
            w.checkpoint_now()  # the one that was the latest is now an old version: checked as one
            set_aside += _set_aside_damaged_versions(storage, w.manifest)
        report = check_dataset(storage, w.manifest, checksums, threads)
        if rebuilt and getattr(w, "_root_lost", False):
            folded = getattr(w, "folded", 0)
            report.repaired.append(f"manifest.json rebuilt from the log (version {w._root_lost}: "
                                   f"{len(w.manifest.units) - folded} units, as committed"
                                   + (f"; {folded} units after it from their commit records)" if folded else ")"))
        elif rebuilt:
            report.repaired.append(f"manifest.json rebuilt from {len(w.manifest.units)} commit records")
        report.repaired += [f"{rel} was damaged: set aside as {rel}.damaged (that version can no longer be read)"
                            for rel in [*ahead, *set_aside]]
        report.repaired += [f"{rel} was damaged: set aside as {rel}.damaged; its version was written again from the "
                            "commit records of its units" for rel in latest_entry]
        for rel in [r for r in report.records if r.startswith(f"{PENDING_DIR}/")]:
            # a record that cannot be read commits nothing (its unit was never in a version): set aside, bytes kept
            storage.put_bytes(f"{rel}.damaged", storage.get_bytes(rel))
            storage.delete(rel)
            report.repaired.append(f"{rel} could not be read: set aside as {rel}.damaged (its unit was not "
                                   "committed; rerun the job to write it)")
            del report.records[rel]
        for rel in report.garbage:
            storage.delete(rel)
            report.removed.append(rel)
            log.info("removed %s", rel)
        # The writer rebuilt damaged statistics from the commit records when it opened (and writes them again
        # on close); what was damaged before is reported as repaired.
        report.repaired += [f"{rel} rebuilt from the units' own statistics" for rel in damaged_stats]
        report.stats = {}
        if drop_damaged and set(report.bad) - report.old_only:
            units = [u for u in w.manifest.units if u.path in report.bad]
            w.drop_units([u.id for u in units])
            report.repaired += [f"{u.path} dropped (rerun the job to write it again)" for u in units]
            dropped = {unit_commit_path(u.id) for u in units}
            report.records = {r: p for r, p in report.records.items() if r not in dropped}
            for u in units:  # the latest no longer names them: a warning from now on, as `verify` will say
                report.old_bad[u.path] = report.bad.pop(u.path)
    return report


def _damaged_stats(storage: Storage, manifest: Manifest) -> list[str]:
    """The latest version's statistics files that do not cover its units less those added since them
    (``stats_pending``, merged by readers from the units' own footers)."""
    from shards.unit_table import IdDigest

    committed = sorted(u.id for u in manifest.units)
    covered = IdDigest.of_units(manifest.units)
    for uid, _path, sum_ in manifest.stats_pending:
        covered = covered.toggled(uid, added=False, checksum=sum_)
    return [manifest.stats_files.get(h, f"stats/{h}.npz") for h in manifest.hooks
            if check_stats_file(storage, h, committed, manifest.stats_files.get(h), covered)]


def _set_aside_damaged_versions(storage: Storage, latest: Manifest) -> list[str]:
    """Move kept version files that cannot be read aside (``.damaged``, bytes kept): each reader, `versions`,
    `verify` and `vacuum` then go on with the readable ones. Files of versions ahead of manifest.json (left by a
    writer that died between the two writes) are set aside too when they cannot be read."""
    from shards.layout import parse_version_name
    from shards.versionlog import list_log_versions, log_path, read_log

    def damaged(rel: str, read) -> bool:
        try:
            read()
            return False
        except (CorruptManifestError, DatasetNotFoundError):
            return True

    suspects = [(version_path(v), lambda v=v: parse_manifest(storage.get_bytes(version_path(v)), "", storage))
                for v in (parse_version_name(f) for f in storage.list(version_path(0).rsplit("/", 1)[0]))
                if v is not None and v != latest.version]
    suspects += [(log_path(v), lambda v=v: read_log(storage, v)) for v in list_log_versions(storage)]
    bad = [rel for rel, read in suspects if damaged(rel, read)]
    # then the versions that can no longer be rebuilt (their chain passes through a damaged record)
    bad += [_record_path(storage, v[0]) for v in walk_versions(storage, latest) if isinstance(v, tuple)]
    for rel in dict.fromkeys(bad):
        if storage.exists(rel):
            storage.put_bytes(f"{rel}.damaged", storage.get_bytes(rel))
            storage.delete(rel)
            log.warning("set aside the damaged %s", storage.display(rel))
    return list(dict.fromkeys(bad))


def _set_aside_a_root_its_log_disagrees_with(storage: Storage) -> None:
    """An edited v3 root is set aside (``manifest.json.damaged``): the repair then rebuilds the latest version from
    the commit records."""
    try:
        latest = read_manifest(storage)
    except (DatasetNotFoundError, CorruptManifestError):
        return
    try:
        problem = root_problem(storage, latest)
    except CorruptManifestError:  # the log is damaged, not the root: the latest reads from it as it is
        return
    if problem is not None:
        storage.put_bytes(f"{MANIFEST}.damaged", storage.get_bytes(MANIFEST))
        storage.delete(MANIFEST)
        log.warning("set aside %s: %s", storage.display(MANIFEST), problem)


def _manifest_or_records(storage: Storage) -> tuple[Manifest, bool]:
    """The manifest, or (when it or its unit list is missing or damaged: ``True``) one standing in for it, whose
    schema the writer that rebuilds it opens with: from the log (the latest entry's version, its unit list replayed
    when its checkpoint cannot be read), else from the commit records."""
    try:
        manifest = read_manifest(storage)
        if hasattr(manifest.units, "loaded"):
            manifest.units.loaded()  # a damaged checkpoint or leaf shows here
        return manifest, False
    except (DatasetNotFoundError, CorruptManifestError) as exc:
        problem = exc
    standin = _schema_from_log(storage)
    if standin is not None:
        return Manifest("", standin, "", ""), True
    records, _bad = readable_records(storage, record_ids(storage))
    if not records:
        records, _bad = readable_records(storage, record_ids(storage, legacy=True), legacy=True)
    if not records:
        raise type(problem)(f"{problem} There is no readable log entry or commit record to rebuild it from."
                            ) from None
    schema = max((r.schema for r in records), key=lambda s: sum(r.schema == s for r in records))
    return Manifest("", schema, "", ""), True


def _schema_from_log(storage: Storage):
    """The latest version's schema as the root (read without its unit list) or the log gives it; None if neither
    can be read."""
    from shards.schema import DatasetSchema
    from shards.versionlog import list_log_versions, read_log, replayed_version

    try:
        return read_manifest(storage, lazy=True, roll=False).schema
    except (DatasetNotFoundError, CorruptManifestError, FileNotFoundError):
        pass
    logged = list_log_versions(storage)
    if not logged:
        return None
    try:
        state, _units = replayed_version(storage, read_log(storage, logged[-1])[0])
        return DatasetSchema.from_json(state["schema"])
    except (CorruptManifestError, FileNotFoundError, KeyError, ValueError, TypeError):
        return None

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
from dataclasses import dataclass

from shards.checksums import checksum
from shards.cleanup import garbage, readable_records, record_ids
from shards.errors import CorruptManifestError, DatasetNotFoundError
from shards.layout import MANIFEST, PENDING_DIR, parse_unit_name, unit_commit_path, version_path
from shards.manifest import ArtifactEntry, Manifest, parse_manifest, read_manifest
from shards.stats_files import check_stats_file
from shards.storage import Storage, StorageOptions
from shards.verify_checks import (  # noqa: F401 - VerifyReport and RECORDS_AT_ONCE are part of this module's API
    RECORDS_AT_ONCE,
    VerifyReport,
    _check_records,
    _check_units,
    _entries_ahead_problems,
)
from shards.versionlog import log_path
from shards.versions import chain_problems, root_problem, walk_versions

log = logging.getLogger("actlake.verify")


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
                   drop_damaged: bool = False, since: int | None = None) -> VerifyReport:
    """Check a dataset (see the module docstring); with ``repair``, fix what can be fixed under the write lock.

    ``break_lock`` (with repair) takes the lock even from a live writer; ``drop_damaged`` (with repair)
    uncommits units whose files are missing or damaged so that a rerun writes them again. ``since``: only the
    versions after that one (``shards.verify_since``: their chain, the files they added, the latest's statistics).
    """
    storage = Storage(uri, storage_options)
    if since is not None:  # the versions after one already verified (``shards.verify_since``)
        from shards.verify_since import check_since

        return check_since(storage, read_manifest(storage, lazy=True), since, checksums, threads)
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
    from shards.versionlog import list_log_versions, read_log

    try:
        version = int(json.loads(storage.get_bytes(MANIFEST))["version"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):  # no root to say: the newest entry is the latest
        logged = list_log_versions(storage)
        if not logged:
            return []
        version = logged[-1]
    rel = log_path(version)
    try:
        read_log(storage, version)
        return []
    except FileNotFoundError:
        return []
    except CorruptManifestError:
        pass
    for path in (rel, MANIFEST):
        if storage.exists(path):
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
            committed = parse_unit_name(rel.rsplit("/", 1)[-1]) in w.manifest.units
            report.repaired.append(f"{rel} could not be read: set aside as {rel}.damaged" + (
                " (its unit is committed: the latest version names it; the record was kept only to rebuild a lost "
                "latest log entry)" if committed else " (its unit was not committed; rerun the job to write it)"))
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

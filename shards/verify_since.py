"""``actlake verify --since VERSION``: what changed after a version an operator already verified, in what it costs.

A full ``verify`` walks every kept version and reads every unit file: at a million units that is minutes and the
whole unit list in memory, after every scheduled tick. ``verify_since`` checks what the versions after ``VERSION``
added, and that they really follow it:

- the log chain: every entry from ``VERSION + 1`` to the latest is there, parses, follows the one before (its
  ``base``) and records the digest of that entry's bytes (a rewritten entry after ``VERSION`` shows here);
- every unit file those entries added: size, checksum (unless ``checksums=False``), footer, schema;
- the statistics files those versions wrote parse, and the latest's cover exactly its units less those it names
  as added since them (by the unit-id digest the log keeps: no unit list is loaded);
- the root agrees with the latest entry (version, unit, row and byte counts, the ids digest), and the files its
  unit list is read from are there: its checkpoint parses, every leaf it lists exists, and the leaves written
  after ``VERSION`` match their digest;
- log entries planted above the latest, and pending commit records.

What it does not re-check (files of ``VERSION`` and before) is what the earlier verify checked; a full ``verify``
remains the check of everything. Memory: the entries after ``VERSION`` and one unit file at a time per thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from shards.cleanup import record_ids
from shards.errors import ConfigError, CorruptManifestError
from shards.manifest import Manifest
from shards.stats_files import check_stats_file
from shards.storage import Storage
from shards.unit_table import IdDigest
from shards.units import UnitEntry
from shards.versionlog import LogEntry, digest, log_path, read_log


class _Sized:
    """A stand-in for a version's unit ids where only their number is needed (messages; "missing" when >0)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def check_since(storage: Storage, latest: Manifest, since: int, checksums: bool = True, threads: int = 4):
    """The ``VerifyReport`` of the versions after ``since`` (see the module docstring); changes nothing."""
    from shards.verify_checks import VerifyReport, _check_records, _check_units, _entries_ahead_problems, _unit_lookup

    report = VerifyReport(storage.display())
    if since > latest.version:
        raise ConfigError(f"--since {since}: the latest version of {storage.display()} is {latest.version} "
                          "(`actlake versions URI` lists them)")
    from shards.versionlog import list_log_versions

    kept = [v for v in list_log_versions(storage) if v <= latest.version]
    base_gone = bool(kept) and 0 < since < kept[0]  # vacuumed: no entry to show the next one follows it
    if kept and since < kept[0] - 1:  # what is left of that span starts at the oldest kept version
        report.notes.append(f"versions {since + 1}..{kept[0] - 1} were vacuumed: checked the versions from "
                            f"{kept[0]}, the oldest kept, on")
        since, base_gone = kept[0] - 1, True
    entries = _chain(storage, latest.version, since, report, base_gone)
    _check_unit_list(storage, latest, since, report)
    added: dict[str, UnitEntry] = {}
    arrow_schema = latest.schema.arrow_schema()
    for entry in entries:
        for d in entry.added:
            unit = UnitEntry.from_json(d)
            added[unit.path] = unit
        _check_stats_written(storage, entry, latest, report)
    _check_units(storage, list(added.values()), arrow_schema, report, set(), checksums, threads)
    _check_latest_stats(storage, latest, entries[-1] if entries else None, report)
    if entries and (problem := _root_disagrees(latest, entries[-1])):
        report.versions["manifest.json"] = problem
    report.versions.update(_entries_ahead_problems(storage, latest.version))
    if not storage.read_only and (pending := record_ids(storage)):
        # the latest version's records stay until the next one: those are looked up among the units added since;
        # the whole unit list is loaded only for a record of another unit (a killed writer's, a second attempt)
        by_id = {u.id: (u.checksum, u.rows) for u in added.values()}
        full = _unit_lookup(latest) if any(i not in by_id for i in pending) else None
        _check_records(storage, latest, report, (lambda uid: by_id.get(uid) or full(uid)) if full else by_id.get)
    report.versions_checked = [e.version for e in entries]
    report.notes.append(f"checked the {len(entries)} versions after version {since} and the {len(added)} unit files "
                        f"they added; `actlake verify URI` checks everything")
    return report


def _chain(storage: Storage, latest: int, since: int, report, base_gone: bool = False) -> list[LogEntry]:
    """The log entries after ``since``, each checked to follow the one before (base and digest of its bytes)."""
    def read(v: int):
        try:
            return read_log(storage, v)
        except FileNotFoundError:
            return None
        except CorruptManifestError as exc:
            return str(exc).split(". `actlake")[0]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(read, range(since, latest + 1)))
    entries: list[LogEntry] = []
    before = got[0]
    if since > 0 and not isinstance(before, tuple) and not base_gone:
        report.versions[log_path(since)] = ("missing or damaged: the versions after it cannot be shown to follow it"
                                            if before is not None else "missing (vacuumed, or lost)")
    for v, item in zip(range(since + 1, latest + 1), got[1:], strict=True):
        if not isinstance(item, tuple):
            report.versions[log_path(v)] = f"damaged: {item}" if item else "missing"
            before = None
            continue
        entry, raw = item
        prev = entry.previous or {}
        if entry.base != v - 1:
            report.versions[log_path(v)] = f"follows version {entry.base}, not {v - 1}"
        elif isinstance(before, tuple) and prev.get("digest") and digest(before[1]) != prev["digest"]:
            report.versions[log_path(v - 1)] = (f"rewritten after it was committed: version {v} recorded its content "
                                                f"as {prev['digest']}, the file now holds {digest(before[1])}")
        entries.append(entry)
        before = item
    return entries


def _check_unit_list(storage: Storage, latest: Manifest, since: int, report) -> None:
    """The files the latest version's unit list is read from: its checkpoint parses, every leaf it lists is there,
    and the leaves not listed by the checkpoint version ``since`` read from (written after it) match their digest
    (a leaf written earlier is checked for presence only, as the unit files of those versions are: the earlier
    verify read it)."""
    from shards.layout import LEAF_DIR, checkpoint_path
    from shards.versionlog import read_checkpoint, read_leaf

    ref = (latest.root or {}).get("units")
    if not isinstance(ref, dict) or "checkpoint" not in ref:
        return  # a v1/v2 root lists its units itself
    version, tag = int(ref["checkpoint"]), str(ref.get("checkpoint_tag") or "")
    try:
        cp = read_checkpoint(storage, version, tag)
    except CorruptManifestError as exc:
        report.versions[checkpoint_path(version, tag)] = str(exc).split(". `actlake")[0]
        return
    before: set[str] = set()
    try:
        at = read_log(storage, since)[0] if since > 0 else None
        if at is not None:
            before = {r.path for r in read_checkpoint(storage, at.checkpoint, read_log(storage, at.checkpoint)[0].tag
                                                      ).leaves}
    except (FileNotFoundError, CorruptManifestError):
        pass  # vacuumed or damaged (reported above): every leaf is read
    present = set(storage.list(LEAF_DIR)) if not storage.read_only else None
    for leaf in cp.leaves:
        if present is not None and leaf.path.rsplit("/", 1)[-1] not in present:
            report.versions[leaf.path] = "missing: the latest version's unit list is read from it"
        elif leaf.path not in before:
            try:
                read_leaf(storage, leaf)
            except CorruptManifestError as exc:
                report.versions[leaf.path] = str(exc).split(". `actlake")[0]


def _check_stats_written(storage: Storage, entry: LogEntry, latest: Manifest, report) -> None:
    """The statistics files a version after ``since`` wrote parse (the latest's are checked for coverage too)."""
    if not entry.stats_at or entry.version == latest.version:
        return
    from shards.layout import versioned_stats_path
    from shards.stats_files import read_stats_file

    for hook in latest.hooks:
        rel = versioned_stats_path(hook, entry.version, entry.tag)
        try:
            read_stats_file(storage, hook, rel)
        except FileNotFoundError:
            continue  # vacuumed with its version, or written under the latest's name: covered below
        except Exception as exc:  # noqa: BLE001 - any parse failure is a damaged file of an older version
            report.old_stats[rel] = f"damaged: {exc}"


def _check_latest_stats(storage: Storage, latest: Manifest, entry: LogEntry | None, report) -> None:
    counts = (entry.counts if entry is not None else None) or {}
    if not counts.get("digest"):
        return
    covered = IdDigest.from_hex(int(counts.get("units", 0)), counts["digest"])
    for uid, _path, sum_ in latest.stats_pending:
        covered = covered.toggled(uid, added=False, checksum=sum_)
    for hook in latest.hooks:
        path = latest.stats_files.get(hook)
        if path and (problem := check_stats_file(storage, hook, _Sized(int(counts.get("units", 0))), path,
                                                 covered)):
            report.stats[path] = problem


def _root_disagrees(latest: Manifest, entry: LogEntry) -> str | None:
    root = (latest.root or {}).get("units")
    if not isinstance(root, dict) or entry.version != latest.version:
        return None
    keys = ("units", "rows", "bytes", "digest")
    ours = {k: root.get(k) for k in keys if k in entry.counts}
    theirs = {k: entry.counts.get(k) for k in ours}
    if ours != theirs:
        return (f"its counts {ours} are not those of version {entry.version}'s log entry {theirs}: edited or "
                "damaged. `actlake verify --repair` rebuilds it")
    return None

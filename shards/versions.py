"""Dataset versions: listing them, walking them in bounded memory, and ``vacuum``, which removes old versions and
the files only they name.

Every manifest write that changes a dataset is a version. Format v3 keeps, per version, a log entry of what it
changed (``shards.versionlog``); format v2 kept a whole manifest per version under ``_versions/``. Committed files
are never rewritten, so ``open_dataset(uri, version=N)`` reads exactly what version N committed. Nothing is ever
deleted except by ``vacuum``, which keeps the newest ``keep`` versions.

Listing (``versions``) reads the small per-version records only. Walking (``walk_versions``, for ``verify`` and
``vacuum``) rebuilds the oldest version once and then applies each later version's changes: memory holds one unit
list, never every version's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shards.cleanup import garbage, readable_records, record_ids
from shards.errors import CorruptManifestError, FormatVersionError
from shards.layout import LEAF_DIR, STATS_DIR, is_temp_file, parse_checkpoint_name, parse_version_name, version_path
from shards.manifest import Manifest, UnitEntry, list_versions, read_manifest
from shards.storage import Storage, StorageOptions
from shards.unit_table import IdDigest
from shards.versionlog import (
    LOG_FORMAT,
    LogEntry,
    apply_state,
    checkpoint_files,
    digest,
    in_parallel,
    list_log_versions,
    live_checkpoints,
    log_path,
    net_changes,
    read_checkpoint,
    read_log,
    version_state,
)

log = logging.getLogger("actlake.versions")
_PROBLEM = (CorruptManifestError, FormatVersionError, KeyError, ValueError, TypeError)


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    """One version as ``actlake versions`` lists it."""

    version: int
    time: str
    rows: int
    units: int
    bytes: int
    operation: str
    job: str
    tick: str
    dataset_id: str
    units_added: int
    units_removed: int
    problem: str = ""  #: a damaged kept version: what is wrong with its file (nothing else is known of it)

    @classmethod
    def damaged(cls, version: int, problem: str) -> VersionInfo:
        return cls(version=version, time="", rows=0, units=0, bytes=0, operation="damaged", job="", tick="",
                   dataset_id="", units_added=0, units_removed=0, problem=problem)

    @classmethod
    def of(cls, m: Manifest) -> VersionInfo:
        c = m.commit
        return cls(version=m.version, time=m.updated, rows=m.num_rows, units=len(m.units), bytes=m.num_bytes,
                   operation=c.operation, job=c.job, tick=c.tick, dataset_id=m.dataset_id, units_added=c.units_added,
                   units_removed=c.units_removed)

    @classmethod
    def of_entry(cls, e: LogEntry, dataset_id: str) -> VersionInfo:
        c, n = e.commit, e.counts
        return cls(version=e.version, time=e.updated, rows=int(n.get("rows", 0)), units=int(n.get("units", 0)),
                   bytes=int(n.get("bytes", 0)), operation=c.get("operation", ""), job=c.get("job", ""),
                   tick=c.get("tick", ""), dataset_id=dataset_id, units_added=int(c.get("units_added", 0)),
                   units_removed=int(c.get("units_removed", 0)))


def _problem(exc: BaseException) -> str:
    return str(exc).split(". Run `actlake verify")[0]


def _v2_versions(storage: Storage) -> list[int]:
    return sorted(v for v in (parse_version_name(f) for f in storage.list("_versions")) if v is not None)


def read_kept(storage: Storage, latest: Manifest | None = None) -> tuple[list[Manifest], dict[int, str]]:
    """The manifest of every kept version that can be read, oldest first, ending with the latest, and the damaged
    ones: version -> what is wrong. Each version is rebuilt whole: for the few that are wanted (``walk_versions``
    serves every version in bounded memory)."""
    latest = latest or read_manifest(storage)
    older = [v for v in list_versions(storage) if v < latest.version]

    def one(v: int) -> Manifest | str:
        try:
            return read_manifest(storage, v)
        except (*_PROBLEM, FileNotFoundError) as exc:
            return _problem(exc)

    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(older, pool.map(one, older), strict=True))
    return [m for m in got.values() if isinstance(m, Manifest)] + [latest], \
        {v: m for v, m in got.items() if isinstance(m, str)}


def versions(uri: str, storage_options: StorageOptions | dict | None = None) -> list[VersionInfo]:
    """Every kept version of the dataset at ``uri``, oldest first (a damaged one listed with its problem): from
    the small per-version records (log entries) alone; a v2 version from its whole manifest."""
    storage = Storage(uri, storage_options)
    try:
        latest = read_manifest(storage, lazy=True)  # its unit list is not needed
    except CorruptManifestError:  # a damaged version after the root's: listed below as damaged
        latest = read_manifest(storage, lazy=True, roll=False)
    infos: list[VersionInfo] = []
    for v in _v2_versions(storage):
        try:
            infos.append(VersionInfo.of(read_manifest(storage, v)))
        except (*_PROBLEM, FileNotFoundError) as exc:
            infos.append(VersionInfo.damaged(v, _problem(exc)))
    logged = list_log_versions(storage)

    def one(v: int):
        try:
            return read_log(storage, v)[0]
        except _PROBLEM as exc:
            return _problem(exc)

    dataset_id = ""
    # a few entries at a time: each holds its version's unit entries (a bulk version's, 10k of them: 256 at a time
    # held 1 GB at 1M units, 16 hold what 16 versions added)
    for start in range(0, len(logged), 16):
        chunk = logged[start:start + 16]
        for v, e in zip(chunk, in_parallel(one, chunk), strict=True):
            if isinstance(e, str):
                infos.append(VersionInfo.damaged(v, e))
                continue
            dataset_id = e.state.get("dataset_id", dataset_id) or latest.dataset_id
            infos.append(VersionInfo.of_entry(e, dataset_id))
    if not infos or (latest.version not in {i.version for i in infos}):
        infos.append(VersionInfo.of(latest))  # a v1 dataset keeps only its latest version
    return sorted({i.version: i for i in infos}.values(), key=lambda i: i.version)


# --- walking every kept version ------------------------------------------------------------------------------------
@dataclass
class VersionView:
    """One version as ``walk_versions`` serves it: its manifest fields, its units (``units``: valid during this
    step only), the units it named first (``new_units``), the digest of its unit ids."""

    version: int
    manifest: Manifest  #: the version's fields; its ``units`` is the current unit dict's values
    units: dict[int, UnitEntry]
    new_units: list[UnitEntry]
    ids: IdDigest
    entry: LogEntry | None = None
    entry_bytes: bytes | None = None
    totals: dict = field(default_factory=dict)  #: {"units", "rows", "bytes"} of ``units`` (format v3 steps)


def walk_versions(storage: Storage, latest: Manifest, wanted: list[int] | None = None
                  ) -> Iterator[VersionView | tuple[int, str]]:
    """Every kept version up to the latest (or the ``wanted`` ones), oldest first: a ``VersionView``, or
    ``(version, problem)`` for one that cannot be read. Consecutive v3 versions are served by applying each one's
    log entry to the last (memory: one unit list)."""
    numbers = sorted(v for v in (wanted if wanted is not None else list_versions(storage)) if v < latest.version)
    prev: VersionView | None = None
    for v in numbers:
        try:
            view = _step(storage, prev, v)
        except (*_PROBLEM, FileNotFoundError) as exc:
            prev = None
            yield v, _problem(exc)
            continue
        prev = view
        yield view
    # the latest from the root's own list, what readers read (an edited root shows against the unit files); a
    # stepped list from its log entry held no less memory at 1M units (3.10 GB against 2.98 GB)
    units = {u.id: u for u in latest.units}
    seen = set(prev.units) if prev is not None else set()
    yield VersionView(version=latest.version, manifest=latest, units=units,
                      new_units=[u for i, u in units.items() if i not in seen or prev.units.get(i) != u],
                      ids=IdDigest.of_units(units.values()))


def _step(storage: Storage, prev: VersionView | None, v: int) -> VersionView:
    try:
        entry, raw = read_log(storage, v)
    except FileNotFoundError:  # a v2 version: its whole manifest
        m = read_manifest(storage, v)
        units = {u.id: u for u in m.units}
        return VersionView(version=v, manifest=m, units=units, new_units=list(units.values()),
                           ids=IdDigest.of_units(units.values()))
    if prev is None or prev.entry is None or entry.base != prev.version or entry.checkpoint == v:
        state, table, entry = version_state(storage, v, summaries=False)
        m = Manifest.from_json(state, table)
        units = {u.id: u for u in table}
        return VersionView(version=v, manifest=m, units=units, new_units=list(units.values()),
                           ids=IdDigest.of_units(units.values()), entry=entry, entry_bytes=raw,
                           totals={"units": len(table), "rows": table.total_rows, "bytes": table.total_bytes})
    added, removed = net_changes([entry])  # raises naming a unit listed twice or without an id
    units, ids, new, totals = prev.units, prev.ids, [], dict(prev.totals)

    def count(u: UnitEntry, sign: int) -> None:
        totals["units"] += sign
        totals["rows"] += sign * u.rows
        totals["bytes"] += sign * u.bytes

    for uid in removed:
        if (old := units.pop(uid, None)) is not None:
            ids = ids.toggled(uid, added=False, checksum=old.checksum)
            count(old, -1)
    for u in added.values():
        u.check()
        if (old := units.get(u.id)) is None:
            ids = ids.toggled(u.id, added=True, checksum=u.checksum)
        else:
            ids = ids.replaced(u.id, old.checksum, u.checksum)
            count(old, -1)
        count(u, 1)
        units[u.id] = u
        new.append(u)
    wrong = {k: (totals[k], entry.counts[k]) for k in totals if k in entry.counts and entry.counts[k] != totals[k]}
    if wrong:
        k, (got, said) = next(iter(wrong.items()))
        raise CorruptManifestError(f"{storage.display(log_path(v))}: its unit list has {got} {k}, its record says "
                                   f"{said} (edited or damaged)")
    state = apply_state(storage, prev.manifest.state_json(), [entry], summaries=False)
    m = Manifest.from_json(state, _Listed(units))
    return VersionView(version=v, manifest=m, units=units, new_units=new, ids=ids, entry=entry, entry_bytes=raw,
                       totals=totals)


def root_problem(storage: Storage, latest: Manifest) -> str | None:
    """What is wrong with a v3 root's unit list: it must be the one the latest version's log entry (and its
    chain from a checkpoint) makes. An edited ``manifest.json`` (its inline changes or counts) reads on its own;
    only this comparison tells. None for a v1/v2 manifest, or when they agree."""
    if not isinstance((latest.root or {}).get("units"), dict):
        return None
    try:
        _state, table, _entry = version_state(storage, latest.version, summaries=False)
    except FileNotFoundError:
        return f"names version {latest.version}, which has no log entry"
    ours = latest.units.table if hasattr(latest.units, "table") else None
    if ours is not None and ours.equals(table.table):
        return None
    if list(latest.units) == list(table):
        return None
    return (f"its unit list ({len(latest.units)} units) is not the one version {latest.version}'s log entries make "
            f"({len(table)} units): edited or damaged. `actlake verify --repair` rebuilds it from the commit records")


class _Listed(list):
    """A version's units as a list (ids sorted) for a walked version's manifest; ``check`` was done per entry."""

    def __init__(self, units: dict[int, UnitEntry]) -> None:
        super().__init__(units[i] for i in sorted(units))

    def check(self) -> None:
        pass


def chain_problems(storage: Storage, views: list[VersionView]) -> dict[int, str]:
    """Kept versions whose bytes are not what the next version recorded of them (``previous``): a version
    rewritten after it was committed, even consistently (its own digests recomputed)."""
    out = {}
    oldest = min((view.version for view in views), default=0)
    for view in views:
        prev = (view.entry.previous if view.entry is not None else None) or (
            {"version": view.manifest.previous_version, "digest": view.manifest.previous_digest}
            if view.manifest.previous_digest else None)
        if not prev:
            continue
        base = int(prev["version"])
        got = _record_digest(storage, base)
        if got is None and base >= oldest and not _set_aside(storage, base):
            # older than every kept version: vacuumed; within them: lost (or set aside by a repair, which said so)
            out[base] = (f"missing: version {view.version} follows it, and versions before it are kept (deleted or "
                         "lost; that version can no longer be read)")
        elif got is not None and got != prev["digest"]:
            out[base] = (f"rewritten after it was committed: version {view.version} recorded its content as "
                         f"{prev['digest']}, the file now holds {got}")
    return out


def _set_aside(storage: Storage, version: int) -> bool:
    """Whether `verify --repair` set the record of ``version`` aside (``.damaged``) as unreadable."""
    return any(storage.exists(f"{rel}.damaged") for rel in (log_path(version), version_path(version)))


def _record_digest(storage: Storage, version: int) -> str | None:
    """The digest of a version's record bytes (its log entry; a v2 version's manifest), None when gone."""
    for rel in (log_path(version), version_path(version)):
        try:
            return digest(storage.get_bytes(rel))
        except FileNotFoundError:
            continue
    return None


# --- vacuum --------------------------------------------------------------------------------------------------------
@dataclass
class VacuumReport:
    uri: str
    kept: list[int] = field(default_factory=list)
    removed_versions: list[int] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict:
        return {"uri": self.uri, "kept_versions": self.kept, "removed_versions": self.removed_versions,
                "removed_files": len(self.removed_files), "dry_run": self.dry_run}


def vacuum(uri: str, keep: int = 1, storage_options: StorageOptions | dict | None = None, dry_run: bool = False,
           break_lock: bool = False, full: bool = False) -> VacuumReport:
    """Remove every version but the newest ``keep``, and the files no kept version (and no commit record) names.

    Runs under the dataset's write lock, so no writer is between writing a unit and committing it. A reader
    still reading a removed version loses its files: keep as many versions as readers may be pinned to.
    Order: the oldest kept version gets a checkpoint of its own first (format v3: its history before it can go),
    then version records, then data, so that a vacuum stopped half-way leaves no kept version naming a missing
    file. What it removes is found in the dropped versions' log entries (each names the files it superseded): it
    costs what it removes (nothing to drop: nothing read, nothing removed). ``full`` (and, when versions are
    dropped, a dataset whose entries do not say what they superseded) lists every file instead and removes whatever
    no kept version names, garbage of killed writers and leaves a writer's merges left included.
    """
    from shards.lock import WriteLock

    if keep < 1:
        raise ValueError(f"--keep {keep}: keep at least the latest version (1)")
    storage = Storage(uri, storage_options)
    read_manifest(storage, lazy=True)  # a clear error when there is no dataset, before the lock is taken
    lock = WriteLock(storage)
    lock.acquire(break_lock=break_lock)
    try:
        return _vacuum(storage, keep, dry_run, full)
    finally:
        lock.release_quietly()


def _named_by(storage: Storage, latest: Manifest, keep_set: list[int]) -> set[str]:
    """Every file a kept version names (walked: one unit list in memory), and every unit a commit record names
    (committed, not yet folded)."""
    named: set[str] = set()
    for view in walk_versions(storage, latest, [v for v in keep_set if v != latest.version]):
        if isinstance(view, tuple):
            raise CorruptManifestError(f"{storage.display()}: kept version {view[0]} is damaged ({view[1]}). "
                                       "`actlake verify --repair` sets it aside; then vacuum again.")
        m = view.manifest
        named |= {u.path for u in view.new_units} | set(m.stats_files.values()) | {a.path for a in
                                                                                  m.artifacts.values()}
    records, _bad = readable_records(storage, record_ids(storage))
    return named | {r.unit.path for r in records}


def _unneeded_stats(storage: Storage, latest: Manifest, named: set[str]) -> list[str]:
    """Statistics files no kept version reads (a v1 dataset's ``stats/<hook>.npz`` is what its latest reads)."""
    stats = [f"{STATS_DIR}/{f}" for f in storage.list(STATS_DIR) if f.endswith(".npz") and not is_temp_file(f)]
    if latest.stats_files:
        return [s for s in stats if s not in named]
    v1_stats = tuple(f"/{h}.npz" for h in latest.hooks)
    return [s for s in stats if s not in named and not s.endswith(v1_stats)]


def _own_checkpoint(storage: Storage, version: int) -> None:
    """Give a v3 version a checkpoint of its own, so that the log entries and checkpoints before it are no longer
    needed to read it. It reuses the leaves of the checkpoint its chain starts from and adds one leaf of the units
    its chain added since (as a writer's checkpoint does): it costs the versions between, not the unit count."""
    from shards.versionlog import LogWriter, net_changes

    entry = read_log(storage, version)[0]
    if storage.exists(entry.checkpoint_path):  # its writer's (or an earlier vacuum's): under the entry's tag
        return
    cp, chain, state = _state_of(storage, entry)
    # named by the version's own tag: whoever writes this name writes this version's state (no other writer can)
    writer = LogWriter(storage, entry.tag)
    writer.checkpoint, writer.leaves, writer.removed = cp.version, list(cp.leaves), set(cp.removed)
    writer.since_added, writer.since_removed = net_changes(chain)
    state = {k: v for k, v in state.items() if k != "format_version"}
    writer._checkpoint(version, {**state, "format_version": LOG_FORMAT if entry.tag else 3}, {}, entry)


def _state_of(storage: Storage, entry: LogEntry):
    """A v3/v4 version's state without its unit list: (the checkpoint its chain starts from, the entries after it,
    the state)."""
    from shards.versionlog import chain_to

    start, chain = chain_to(storage, entry, set(checkpoint_files(storage)))
    cp = read_checkpoint(storage, start.version, start.tag)
    return cp, chain, apply_state(storage, cp.state, chain, summaries=False)


def _superseded_files(storage: Storage, latest: Manifest, drop: list[int], first_kept: int) -> list[str] | None:
    """What dropping ``drop`` (every version before ``first_kept``) stops naming, from the log entries alone: the
    files of units removed or replaced by the versions after the oldest dropped one up to the first kept one (file
    names are never reused), and the statistics files dropped versions wrote that the first kept version does not
    name. It costs the dropped versions, not the units. None when an entry does not record what it superseded
    (written before 2026-12, or an overwrite): then the dataset's files are listed."""
    from shards.layout import versioned_stats_path

    if not drop or any(storage.exists(version_path(v)) for v in drop):
        return None
    try:
        entries = in_parallel(lambda v: read_log(storage, v)[0], list(range(min(drop), first_kept + 1)))
    except (FileNotFoundError, CorruptManifestError):
        return None
    if any(e.superseded is None for e in entries[1:]):
        return None
    files = {p for e in entries[1:] for p in e.superseded}
    kept_stats = set((_state_of(storage, entries[-1])[2].get("stats_files") or {}).values())
    # the statistics files the oldest dropped version names (possibly written by a version an earlier vacuum
    # dropped) and those the dropped versions wrote, less what the first kept version names
    files |= set((_state_of(storage, entries[0])[2].get("stats_files") or {}).values()) - kept_stats
    files |= {p for e in entries[:-1] if e.stats_at for h in latest.hooks
              if (p := versioned_stats_path(h, e.version, e.tag)) not in kept_stats}
    return sorted(files)


def _reroot(storage: Storage, latest: Manifest, first_kept: int) -> None:
    """Point the root at the newest checkpoint at or before the latest version (the one ``_own_checkpoint``
    may have just written), with the chain after it."""
    import json

    from shards.layout import MANIFEST
    from shards.versionlog import inline_changes, net_changes

    root = latest.root or {}
    ref = root.get("units")
    if not isinstance(ref, dict) or int(ref["checkpoint"]) >= first_kept:
        return
    chain = [v for v in ref.get("chain") or [] if v > first_kept]
    ref = {k: v for k, v in ref.items() if k not in ("added", "removed", "checkpoint_tag")}
    ref.update(checkpoint=first_kept, chain=chain,
               **inline_changes(*net_changes([read_log(storage, v)[0] for v in chain])))
    if tag := read_log(storage, first_kept)[0].tag:
        ref["checkpoint_tag"] = tag
    new = {**root, "units": ref}
    storage.put_bytes(MANIFEST, (json.dumps(new, separators=(",", ":"), allow_nan=False) + "\n").encode())


def _history_to_drop(storage: Storage, drop: list[int], first_kept: int, full: bool = False,
                     reused: set[str] = frozenset()) -> list[str]:
    """The version records of dropped versions, checkpoints before the first kept version, and leaves no kept
    checkpoint lists. A checkpoint file at a kept version that a losing writer left lists leaves kept too (finding
    out reads every kept checkpoint's log entry, whole: at a million units that cost seconds per vacuum); ``full``
    finds out, and removes what only such files list."""
    files = [log_path(v) for v in drop if v in set(list_log_versions(storage))]
    files += [version_path(v) for v in drop if v in set(_v2_versions(storage))]
    cps = [(rel, parse_checkpoint_name(rel.rsplit("/", 1)[1])) for rel in checkpoint_files(storage)]
    later = [(rel, vt) for rel, vt in cps if vt[0] >= first_kept]
    live = set(live_checkpoints(storage, [rel for rel, _vt in later])) if full else None
    files += [rel for rel, (v, _tag) in cps if v < first_kept]
    listed: set[str] = set(reused)
    for _rel, (v, tag) in later:
        if live is not None and (v, tag) not in live:
            continue
        try:
            listed |= {ref.path for ref in read_checkpoint(storage, v, tag).leaves}
        except (CorruptManifestError, FileNotFoundError):
            if live is None and (v, tag) not in set(live_checkpoints(storage, [_rel])):
                continue  # a losing writer's damaged file: it names nothing a version reads
            raise
    files += [f"{LEAF_DIR}/{f}" for f in storage.list(LEAF_DIR) if f"{LEAF_DIR}/{f}" not in listed]
    return files


def _reused_leaves(storage: Storage, first_kept: int) -> set[str]:
    """A dry run's stand-in for the checkpoint a real vacuum gives the first kept version (``_own_checkpoint``): the
    leaves of the checkpoint its chain starts from, which that one lists again (so a dry run does not count them as
    removed)."""
    try:
        entry = read_log(storage, first_kept)[0]
    except (FileNotFoundError, CorruptManifestError):
        return set()
    if storage.exists(entry.checkpoint_path):
        return set()
    cp, _chain, _state = _state_of(storage, entry)
    return {ref.path for ref in cp.leaves}


def _vacuum(storage: Storage, keep: int, dry_run: bool, full: bool = False) -> VacuumReport:
    latest = read_manifest(storage, lazy=True)  # again, under the lock
    kept_versions = [v for v in list_versions(storage) if v <= latest.version] or [latest.version]
    drop = kept_versions[:-keep] if len(kept_versions) > keep else []
    keep_set = [v for v in kept_versions if v not in drop]
    first_kept = min(keep_set)
    if not dry_run and drop and first_kept in set(list_log_versions(storage)):
        _own_checkpoint(storage, first_kept)
        _reroot(storage, latest, first_kept)
        latest = read_manifest(storage, lazy=True)
    # nothing to drop: nothing a version stops naming (a killed writer's leftovers are found by `--full` only, which
    # lists the dataset: an incremental vacuum costs what it removes, nothing here)
    files = None if full else _superseded_files(storage, latest, drop, first_kept) if drop else []
    if files is None:  # the whole dataset's files, against what every kept version names
        named = _named_by(storage, latest, keep_set)
        files = sorted(set(garbage(storage, named)) | set(_unneeded_stats(storage, latest, named)))
    else:
        files = [f for f in files if storage.exists(f)]
    history = _history_to_drop(storage, drop, first_kept, full, _reused_leaves(storage, first_kept) if dry_run
                               else frozenset()) if drop else []
    report = VacuumReport(uri=storage.display(), kept=keep_set, removed_versions=drop,
                          removed_files=files + history, dry_run=dry_run)
    if dry_run:
        return report
    for rel in history:  # version records first, then data: no kept version names a file that is gone
        storage.delete(rel)
    for rel in files:
        storage.delete(rel)
    log.info("vacuumed %s: removed %d version(s), their %d version record(s) and %d other file(s); kept versions %s",
             storage.display(), len(drop), len(history), len(files), keep_set)
    return report


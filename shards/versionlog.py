"""Format v3: every version records what it changed; the unit list lives in shared, immutable leaves.

::

    manifest.json                        the latest version: its state (schema, statistics, provenance, ...) and
                                         where its unit list is: a checkpoint and the log entries after it
    _log/v000000123.json                 what version 123 changed: units added and removed, state that changed,
                                         the version it follows (``base``) and that version's digest (a chain)
    _checkpoints/v000000112.json         the whole state of version 112 and its unit list as a list of leaves
                                         (less the ids in ``removed``)
    _checkpoints/leaves/<digest>.parquet the unit entries of a range of commits, immutable, named by the digest
                                         of their bytes and shared by every later checkpoint that lists them

A commit writes its log entry and the root: bytes proportional to what it changed. Every ``CHECKPOINT_EVERY``
versions a checkpoint turns the units added since the last one into one new leaf, and merges the last ``TIER``
leaves of a level into one leaf of the next level (size-tiered, as log-structured stores do): a unit is copied
once per level, O(log N) times in all, and a version's unit list is one checkpoint (a few dozen leaves) plus at
most ``CHECKPOINT_EVERY`` log entries, whatever the number of units. Delta Lake keeps a log entry per commit and a
full checkpoint every 10 (every checkpoint a copy of the whole list); Iceberg shares manifest files between
snapshots. Measured (docs/benchmarks.md): at 100k units a commit writes a few kB and opening reads ~1 MB.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from shards.errors import CorruptManifestError, VersionConflictError
from shards.layout import (
    CHECKPOINT_DIR,
    LOG_DIR,
    MANIFEST,
    check_tag,
    checkpoint_path,
    leaf_path,
    log_path,
    parse_checkpoint_name,
)
from shards.parallel import in_parallel
from shards.records import json_object
from shards.storage import Storage
from shards.unit_table import UnitTable

LOG_FORMAT = 4  #: the ``format_version`` of the log entries, checkpoints and roots this actlake writes
CHECKPOINT_EVERY = 16  #: log entries after a checkpoint before the next one, once LEAF_MIN units changed
CHECKPOINT_MAX = 64  #: log entries after a checkpoint before the next one, whatever changed (tiny commits)
LEAF_MIN = 256  #: units changed since the checkpoint that make a new leaf worth its file
TIER = 4  #: leaves of one level merged into one of the next
LEAF0 = 256  #: the unit count of a level-0 leaf's size class (a leaf of a whole dataset gets its level by size)
INLINE_MAX = 256  #: changes since the checkpoint a root lists itself (beyond, readers read the log entries)
FULL_COMPACTION = 4096  #: tombstones at which every leaf is merged into one (removals are rare: repair, re-extract)
#: state fields every version writes anew (never kept in a log entry's state changes)
PER_VERSION = ("version", "updated", "commit", "format_version", "previous", "code_version")
#: state fields a log entry does not repeat: the statistics files are named by the version that wrote them
#: (``stats_at``) and their summaries are read from them (a few hundred bytes saved per version)
DERIVED = ("stats", "stats_files", "stats_pending")


#: the state change of a version that planned, finished or abandoned a scheduled tick: the tick records that are new
#: or changed, not the whole list (which every tick of a year-long hourly schedule would otherwise write twice: the
#: log of the 1,000th tick held 714 kB)
TICKS_CHANGED = "ticks_changed"


def ticks_delta(before: list | None, after: list) -> list | None:
    """The tick records (as JSON) of ``after`` that are new or differ from ``before``'s, when ``after`` only appends
    to or changes ``before``'s records in place (ticks are never removed or reordered); else None (write the list)."""
    if not before or len(after) < len(before):
        return None
    if any(a.get("tick") != b.get("tick") for a, b in zip(after, before, strict=False)):
        return None
    return [t for i, t in enumerate(after) if i >= len(before) or t != before[i]]


def merge_ticks(ticks: list, delta: list) -> list:
    """``ticks`` with ``delta``'s records put in place (by tick id) or appended."""
    at = {t.get("tick"): i for i, t in enumerate(ticks)}
    out = list(ticks)
    for t in delta:
        if t.get("tick") in at:
            out[at[t.get("tick")]] = t
        else:
            at[t.get("tick")] = len(out)
            out.append(t)
    return out


def digest(data: bytes) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(data)


def dumps(obj: dict) -> bytes:
    """Compact strict JSON: no NaN/Infinity (other languages' parsers refuse them)."""
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode()


#: what every error about damaged metadata ends with
REPAIR = (" `actlake verify --repair URI` rebuilds the latest version from the commit records and sets aside the "
          "versions that can no longer be read.")


def damaged(message: str) -> CorruptManifestError:
    return CorruptManifestError(message + REPAIR)


def _loads(raw: bytes, where: str) -> dict:
    return json_object(raw, where, "an object", REPAIR.strip())


@dataclass(frozen=True)
class LeafRef:
    """One leaf of a checkpoint's unit list."""

    path: str
    digest: str
    units: int
    level: int

    def to_json(self) -> dict:
        return {"path": self.path, "digest": self.digest, "units": self.units, "level": self.level}

    @classmethod
    def from_json(cls, d: dict) -> LeafRef:
        ref = cls(str(d["path"]), str(d["digest"]), int(d["units"]), int(d.get("level", 0)))
        if ref.path != leaf_path(ref.digest):  # a damaged or hostile record cannot point outside the leaves
            raise ValueError(f"leaf path {ref.path!r} is not {leaf_path(ref.digest)!r}")
        return ref


@dataclass
class LogEntry:
    """What one version changed (``_log/vNNNNNNNNN.json``)."""

    version: int
    base: int  #: the version this one follows (its state plus these changes is this version's)
    checkpoint: int  #: the checkpoint the chain to this version starts from (== version: this version has one)
    previous: dict | None  #: {"version": base, "digest": of base's record bytes}: the chain
    updated: str
    commit: dict
    added: list[dict] = field(default_factory=list)  #: unit entries (as the format writes them)
    removed: list[int] = field(default_factory=list)
    state: dict = field(default_factory=dict)  #: state fields that changed (not the DERIVED ones)
    counts: dict = field(default_factory=dict)  #: {"units", "rows", "bytes"} after this version
    stats_at: int | None = None  #: this version wrote statistics files (``stats/<hook>.v<stats_at>-<tag>.npz``)
    #: the writer session that wrote this version (format v4): its statistics files and checkpoint carry it in their
    #: names, so that files another writer wrote for the same version number are never taken for this one's
    tag: str = ""
    #: the files of the units this version removed or replaced (what stops being named with it: ``vacuum`` removes
    #: them once no kept version is before it); None in entries written before 2026-12 and by an overwrite's first
    #: version, whose vacuum lists the dataset's files instead
    superseded: list[str] | None = None

    def to_json(self) -> dict:
        # empty fields are left out: a one-unit version's record is mostly that unit's entry
        # so are the commit's unit counts when they are the lengths of ``added`` and ``removed`` (from_json
        # restores them): with them, a one-unit version's record was ~13 % larger
        derived = {"units_added": len(self.added), "units_removed": len(self.removed)}
        commit = {k: v for k, v in self.commit.items() if v not in ("", None) and derived.get(k, -1) != v}
        out = {"format_version": LOG_FORMAT if self.tag else 3, "version": self.version, "base": self.base,
               "checkpoint": self.checkpoint, "previous": self.previous, "updated": self.updated, "commit": commit,
               "added": self.added}
        for name, value in (("removed", self.removed), ("state", self.state), ("stats_at", self.stats_at),
                            ("tag", self.tag)):
            if value:
                out[name] = value
        if self.superseded is not None:
            out["superseded"] = self.superseded
        out["counts"] = self.counts
        return out

    @classmethod
    def from_json(cls, d: dict) -> LogEntry:
        added, removed = list(d.get("added") or []), [int(i) for i in d.get("removed") or []]
        commit = {"units_added": len(added), "units_removed": len(removed), **(d.get("commit") or {})}
        return cls(version=int(d["version"]), base=int(d["base"]), checkpoint=int(d["checkpoint"]),
                   previous=d.get("previous"), updated=str(d.get("updated", "")), commit=commit,
                   added=added, removed=removed,
                   state=dict(d.get("state") or {}), counts=dict(d.get("counts") or {}),
                   stats_at=int(d["stats_at"]) if d.get("stats_at") is not None else None,
                   tag=check_tag(str(d.get("tag") or "")),
                   superseded=[str(x) for x in d["superseded"]] if isinstance(d.get("superseded"), list) else None)

    @property
    def checkpoint_path(self) -> str:
        """Where this version's own checkpoint is, when it has one (written by its writer or by ``vacuum``)."""
        return checkpoint_path(self.version, self.tag)

    def stats_path(self, hook: str) -> str:
        """The statistics file of ``hook`` this version wrote (when ``stats_at`` is set)."""
        from shards.layout import versioned_stats_path

        return versioned_stats_path(hook, self.version, self.tag)


@dataclass
class Checkpoint:
    """The whole state of one version and its unit list as leaves (``_checkpoints/vNNNNNNNNN.json``)."""

    version: int
    state: dict
    leaves: list[LeafRef]
    removed: list[int] = field(default_factory=list)  #: ids in the leaves that are no longer units
    tag: str = ""  #: the tag of the version's log entry (format v4; the file's name carries it)

    def to_json(self) -> dict:
        out = {"format_version": LOG_FORMAT if self.tag else 3, "version": self.version, "state": self.state,
               "leaves": [leaf.to_json() for leaf in self.leaves], "removed": self.removed}
        return {**out, "tag": self.tag} if self.tag else out

    @classmethod
    def from_json(cls, d: dict) -> Checkpoint:
        return cls(version=int(d["version"]), state=dict(d["state"]),
                   leaves=[LeafRef.from_json(x) for x in d.get("leaves") or []],
                   removed=[int(i) for i in d.get("removed") or []], tag=check_tag(str(d.get("tag") or "")))


# --- reading ------------------------------------------------------------------------------------------------------
def read_log(storage: Storage, version: int) -> tuple[LogEntry, bytes]:
    """A version's log entry and its bytes; FileNotFoundError when there is none."""
    raw = storage.get_bytes(log_path(version))
    try:
        return LogEntry.from_json(_loads(raw, storage.display(log_path(version)))), raw
    except (KeyError, ValueError, TypeError) as exc:
        raise damaged(f"{storage.display(log_path(version))} is damaged: {exc}.") from None


def read_checkpoint(storage: Storage, version: int, tag: str = "") -> Checkpoint:
    """The checkpoint of ``version`` written under ``tag`` (the tag of the version's log entry)."""
    rel = checkpoint_path(version, tag)
    try:
        cp = Checkpoint.from_json(_loads(storage.get_bytes(rel), storage.display(rel)))
    except FileNotFoundError:
        raise damaged(f"{storage.display(rel)} is missing: the metadata of version {version} is incomplete."
                      ) from None
    except (KeyError, ValueError, TypeError) as exc:
        raise damaged(f"{storage.display(rel)} is damaged: {exc}.") from None
    if (cp.version, cp.tag) != (int(version), tag):
        raise damaged(f"{storage.display(rel)} holds version {cp.version} (tag {cp.tag or 'none'}), not its name's.")
    return cp


def read_leaf(storage: Storage, ref: LeafRef) -> UnitTable:
    """A leaf, checked against the digest its checkpoint records."""
    try:
        data = storage.get_bytes(ref.path)
    except FileNotFoundError:
        raise damaged(f"{storage.display(ref.path)} is missing (a leaf of the unit list).") from None
    if digest(data) != ref.digest:
        raise damaged(f"{storage.display(ref.path)} is damaged: its digest is not {ref.digest}.")
    table = UnitTable.from_parquet(data)
    if len(table) != ref.units:
        raise damaged(f"{storage.display(ref.path)} holds {len(table)} units, its record says {ref.units}.")
    return table


def checkpoint_units(storage: Storage, cp: Checkpoint) -> UnitTable:
    """A checkpoint's unit list: its leaves in order (a later leaf's entry of an id wins), less ``removed``."""
    tables = in_parallel(lambda ref: read_leaf(storage, ref), cp.leaves)
    return UnitTable.layered(tables, cp.removed)


def _net(entries: list[LogEntry]) -> tuple[dict[int, dict], set[int]]:
    """The unit changes of ``entries`` applied in order, as one change, on the entries' JSON: unit entries added
    or replaced (by id; a later one wins) and ids removed."""
    added: dict[int, dict] = {}
    removed: set[int] = set()
    for e in entries:
        ids = [_unit_id(e, d) for d in e.added]
        if len(set(ids)) != len(ids):
            raise damaged(f"{log_path(e.version)}: units {_repeated(ids)} are listed more than once.")
        for uid in e.removed:
            added.pop(uid, None)
            removed.add(uid)
        for uid, d in zip(ids, e.added, strict=True):
            added[uid] = d
            removed.discard(uid)
    return added, removed


def _unit_id(entry: LogEntry, d: object) -> int:
    try:
        return int(d["id"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise damaged(f"{log_path(entry.version)}: a unit entry in `added` has no integer id.") from None


def net_changes(entries: list[LogEntry]) -> tuple[dict[int, object], set[int]]:
    """``_net`` with each added unit as a (checked) ``UnitEntry``."""
    from shards.units import UnitEntry

    added, removed = _net(entries)
    return {uid: UnitEntry.from_json(d) for uid, d in added.items()}, removed


def apply_entries(base: UnitTable, entries: list[LogEntry]) -> UnitTable:
    """``base`` with the unit changes of ``entries`` applied in order (entries as JSON: no ``UnitEntry`` per unit;
    the table is checked as a whole by whoever makes a manifest of it)."""
    added, removed = _net(entries)
    return _apply_dicts(base, list(added.values()), removed)


def _apply_dicts(base: UnitTable, added: list[dict], removed: set[int]) -> UnitTable:
    if not (added or removed):
        return base
    return UnitTable.layered([base, UnitTable.from_json_entries(added)], sorted(removed))


def root_changes(ref: dict) -> tuple[dict[int, object], set[int]] | None:
    """The changes since the checkpoint a root lists itself (``added``/``removed``), or None when it names
    only the log entries that hold them (more than INLINE_MAX units changed)."""
    from shards.units import UnitEntry

    if "added" not in ref:
        return None
    listed = [UnitEntry.from_json(d) for d in ref["added"]]
    added = {u.id: u for u in listed}
    if len(added) != len(listed):
        raise ValueError(f"units {_repeated(u.id for u in listed)} are listed more than once")
    return added, {int(i) for i in ref.get("removed") or []}


def _repeated(ids) -> list[int]:
    from collections import Counter

    return sorted(i for i, n in Counter(ids).items() if n > 1)


def check_counts(table: UnitTable, counts: dict, where: str) -> UnitTable:
    """A unit list against the counts its version recorded (``{"units", "rows", "bytes"}``): an edited list (a unit
    dropped, rows changed) whose counts were not edited too is refused here, on open."""
    for name, got in (("units", len(table)), ("rows", table.total_rows), ("bytes", table.total_bytes)):
        if name in counts and int(counts[name]) != got:
            raise damaged(f"{where}: its unit list has {got} {name}, its record says {counts[name]} (edited or "
                          "damaged).")
    return table


def chain_to(storage: Storage, entry: LogEntry, checkpoints: set[str] | None = None
             ) -> tuple[LogEntry, list[LogEntry]]:
    """The log entry of the newest checkpoint on ``entry``'s chain (its own, or one ``vacuum`` wrote at a later
    version; ``checkpoints``: the checkpoint files listed, None where nothing can be listed) and the log entries
    after it up to ``entry``, oldest first (at most CHECKPOINT_EVERY). A checkpoint counts only under the tag of
    its version's log entry: one a writer that lost that version number wrote is never read."""
    def has_checkpoint(e: LogEntry) -> bool:
        if checkpoints is None:
            return e.version == entry.checkpoint
        return e.checkpoint_path in checkpoints

    chain = [entry]
    while not has_checkpoint(chain[-1]):
        base = chain[-1].base
        if chain[-1].version <= entry.checkpoint or len(chain) > 2 * CHECKPOINT_MAX:
            raise damaged(f"{storage.display(log_path(entry.version))}: its chain does not reach a checkpoint "
                          f"(checkpoint {entry.checkpoint} is missing).")
        try:
            chain.append(read_log(storage, base)[0])
        except FileNotFoundError:
            raise damaged(f"{storage.display(log_path(base))} is missing: version {chain[-1].version} follows it "
                          f"(its unit list starts at checkpoint {entry.checkpoint}).") from None
    return chain[-1], list(reversed(chain[:-1]))


def apply_state(storage: Storage, state: dict, entries: list[LogEntry], summaries: bool = True) -> dict:
    """``state`` with the state changes of ``entries`` applied in order; the last one's per-version fields; the
    statistics files of the last version that wrote some and the units added since (``stats_pending``: format v4
    writes statistics files every few hundred units, and a version between merges its added units' own); with
    ``summaries``, the per-hook summaries of exactly this version's statistics (read from those)."""
    from shards.layout import versioned_stats_path

    state = dict(state)
    stats_by = None  #: the last entry that wrote statistics files
    pending = [list(p) for p in state.get("stats_pending") or ()]
    for e in entries:
        changes = dict(e.state)
        delta = changes.pop(TICKS_CHANGED, None)
        state.update(changes)
        if delta is not None:
            state["ticks"] = merge_ticks(state.get("ticks") or [], delta)
        if e.stats_at:
            stats_by, pending = e, []
        else:  # only additions: a version that removes or replaces units writes statistics files (the writer)
            try:
                pending += [[_unit_id(e, d), str(d["path"]), str(d["checksum"])] for d in e.added]
            except (KeyError, TypeError, ValueError):
                raise damaged(f"{log_path(e.version)}: a unit entry in `added` lacks its id, path or checksum."
                              ) from None
    if entries:
        last = entries[-1]
        state.update(version=last.version, updated=last.updated, commit=last.commit, previous=last.previous)
    state["stats_pending"] = pending
    if stats_by is not None:
        hooks = list((state.get("schema") or {}).get("hooks") or {})
        state["stats_files"] = {h: versioned_stats_path(h, stats_by.stats_at, stats_by.tag) for h in hooks}
    if summaries and (stats_by is not None or pending):
        state["stats"] = _summaries(storage, state)
    elif not summaries:
        state["stats"] = {}
    return state


def _summaries(storage: Storage, state: dict) -> dict:
    """Per-hook summaries of a version's statistics: its statistics files with its pending units merged in."""
    from shards.partials import version_stats
    from shards.schema import DatasetSchema

    schema = DatasetSchema.from_json(state["schema"])
    try:
        stats = version_stats(storage, state.get("stats_files") or {}, state.get("stats_pending") or (), schema)
    except Exception:  # noqa: BLE001 - a file missing or damaged, whichever way (see below)
        # the version's rows are intact: it stays readable without summaries; reading a hook's statistics names
        # the file, and `verify` reports it (the latest's, repair rebuilds)
        return {}
    return {h: s.summary().to_json() for h, s in stats.items()}


def version_state(storage: Storage, version: int, summaries: bool = True) -> tuple[dict, UnitTable, LogEntry]:
    """The state (manifest fields) and unit list of a v3/v4 version, from its checkpoint and log entries
    (``summaries``: with its statistics' summaries, which cost reading its statistics)."""
    entry, _raw = read_log(storage, version)
    # a web server cannot list: the entry names the checkpoint its unit list starts from (a vacuum may have given
    # a later version one too; the listing finds that shorter way where there is one)
    known = None if storage.read_only else set(checkpoint_files(storage))
    start, chain = chain_to(storage, entry, known)
    cp = read_checkpoint(storage, start.version, start.tag)
    state = apply_state(storage, cp.state, chain, summaries)
    if not chain:
        state.update(version=entry.version, updated=entry.updated, commit=entry.commit, previous=entry.previous)
    units = check_counts(apply_entries(checkpoint_units(storage, cp), chain), entry.counts,
                         storage.display(log_path(version)))
    return state, units, entry


def root_units(storage: Storage, units_ref: dict, lazy: bool = False):
    """The latest version's unit list, from what its root names: a checkpoint, and the changes since that the
    root lists itself or the log entries after the checkpoint (read 16 at a time). ``lazy``: read the checkpoint
    record and check what the root lists now, the rest when first used (a ``LazyUnitTable``)."""
    cp = read_checkpoint(storage, int(units_ref["checkpoint"]), str(units_ref.get("checkpoint_tag") or ""))
    for name in ("units", "rows", "bytes"):
        int(units_ref[name])  # KeyError/ValueError: a damaged root, named now
    if "added" in units_ref:  # the changes since the checkpoint, listed in the root itself
        listed = units_ref["added"]
        if len({d.get("id") for d in listed}) != len(listed):
            raise ValueError(f"units {_repeated(d.get('id') for d in listed)} are listed more than once")
        removed = {int(i) for i in units_ref.get("removed") or []}

        def load() -> UnitTable:
            return check_counts(_apply_dicts(checkpoint_units(storage, cp), listed, removed), units_ref, MANIFEST)
    else:
        def load() -> UnitTable:
            return _from_chain(storage, cp, units_ref)
    if lazy:
        from shards.unit_table import LazyUnitTable

        return LazyUnitTable(load, units_ref, storage.display(MANIFEST))
    return load()


def _from_chain(storage: Storage, cp: Checkpoint, units_ref: dict) -> UnitTable:

    def one(v) -> LogEntry:
        try:
            return read_log(storage, int(v))[0]
        except FileNotFoundError:
            raise damaged(f"{storage.display(log_path(v))} is missing: {MANIFEST} names it.") from None

    entries = in_parallel(one, list(units_ref.get("chain") or []))
    return check_counts(apply_entries(checkpoint_units(storage, cp), entries), units_ref, MANIFEST)


def list_log_versions(storage: Storage) -> list[int]:
    out = []
    for f in storage.list(LOG_DIR):
        if f.startswith("v") and f.endswith(".json") and f[1:-5].isdigit() and len(f) == 15:
            out.append(int(f[1:-5]))
    return sorted(out)


def list_checkpoints(storage: Storage) -> list[int]:
    """The versions that checkpoint files are named for (some may be a losing writer's: see ``checkpoint_files``)."""
    return sorted({v for v, _tag in (parse_checkpoint_name(f) for f in _checkpoint_names(storage))})


def checkpoint_files(storage: Storage) -> list[str]:
    """The checkpoint files present (``_checkpoints/v…[-tag].json``), sorted by version."""
    names = sorted(_checkpoint_names(storage), key=parse_checkpoint_name)
    return [f"{CHECKPOINT_DIR}/{f}" for f in names]


def live_checkpoints(storage: Storage, files: list[str] | None = None) -> list[tuple[int, str]]:
    """(version, tag) of the checkpoint files (all listed, or ``files``) that a version reads: its log entry exists
    and carries the file's tag. The others are what a writer stopped mid-commit, or one that lost its version number
    to another writer, left: garbage (``verify --repair`` and ``vacuum`` remove them). A damaged entry keeps its
    checkpoints (repair sets the entry aside first)."""
    out = []
    for rel in checkpoint_files(storage) if files is None else files:
        v, tag = parse_checkpoint_name(rel.rsplit("/", 1)[-1])
        try:
            if read_log(storage, v)[0].tag == tag:
                out.append((v, tag))
        except FileNotFoundError:
            continue
        except CorruptManifestError:
            out.append((v, tag))
    return out


def _checkpoint_names(storage: Storage) -> list[str]:
    return [f for f in storage.list(CHECKPOINT_DIR) if parse_checkpoint_name(f) is not None]


def create_version(storage: Storage, version: int, raw: bytes) -> None:
    """Create ``_log/vN.json`` with ``raw`` only if no version N exists: the commit of version N (O_EXCL-like on
    disks, ``If-None-Match: *`` on S3). VersionConflictError when another writer created it first. A retried
    create that finds its own bytes (the first try succeeded, its answer was lost) succeeded."""
    rel = log_path(version)
    if storage.create_exclusive(rel, raw):
        return
    try:
        if storage.get_bytes(rel) == raw:
            return
    except FileNotFoundError:
        pass
    raise VersionConflictError(
        f"version {version} of {storage.display()} was committed by another writer first: this writer's lock "
        "was taken over (it stalled past the lock's ttl -- a paused process, a suspended machine -- or clocks "
        "disagree), so it stops and commits nothing more. The units it wrote are in commit records: the writer "
        "that holds the dataset now folds them, and rerunning the job resumes it.")


def entries_after(storage: Storage, version: int) -> list[tuple[LogEntry, bytes]]:
    """The log entries committed after ``version``, oldest first: ``version``+1, +2, ... while they exist (one
    request that finds none, when ``version`` is the latest). A root names the latest version when it was written;
    a writer stopped between its log entry (its commit) and its root, or a stalled writer that put an older root
    over a newer one, leaves versions after it. An entry that does not follow the one before (``base``) is damaged
    or planted: refused, naming ``verify --repair``."""
    out: list[tuple[LogEntry, bytes]] = []
    while True:
        v = version + len(out) + 1
        try:
            entry, raw = read_log(storage, v)
        except FileNotFoundError:
            return out
        if not follows(entry, v - 1):
            raise damaged(f"{storage.display(log_path(v))} does not follow version {v - 1} (it says version "
                          f"{entry.version}, base {entry.base}): planted or damaged.")
        out.append((entry, raw))


def follows(entry: LogEntry, version: int) -> bool:
    """Whether ``entry`` is the version after ``version``: its base, or a new start (an overwrite, a rebuild: no
    chain, a checkpoint of its own) numbered after it."""
    if entry.version != version + 1:
        return False
    return entry.base == version or (entry.previous is None and entry.checkpoint == entry.version)


def rolled_forward(storage: Storage, root: dict) -> dict | None:
    """A root for the latest version when versions were committed after the one ``root`` names (see
    ``entries_after``), else None: the latest state, and its unit list as the checkpoint and chain the log gives."""
    if not isinstance(root, dict) or not isinstance(root.get("version", 0), int):
        return None
    after = entries_after(storage, int(root.get("version", 0)))
    if not after:
        return None
    return root_of(storage, after[-1][0])


def replayed_version(storage: Storage, latest: LogEntry, state: dict | None = None) -> tuple[dict, UnitTable]:
    """The state and unit list of ``latest``'s version rebuilt by replaying log entries, for a repair when its
    checkpoint or a leaf cannot be read: from the newest checkpoint that reads whole (its leaves checked), or,
    failing every one, from the last kept entry that started the dataset anew (no predecessor: a creation, an
    overwrite), applying every entry after it in order. ``state``: the version's state when the root still gives it
    (else replayed too). CorruptManifestError when neither start exists (versions vacuumed away)."""
    from shards.layout import parse_checkpoint_name

    logged = [v for v in list_log_versions(storage) if v <= latest.version]
    start: tuple[dict, UnitTable, int] | None = None
    for rel in reversed(checkpoint_files(storage)):
        v, tag = parse_checkpoint_name(rel.rsplit("/", 1)[-1])
        if v > latest.version or v not in logged:
            continue
        try:
            if read_log(storage, v)[0].tag != tag:
                continue
            cp = read_checkpoint(storage, v, tag)
            start = (dict(cp.state), checkpoint_units(storage, cp), v)
            break
        except (CorruptManifestError, FileNotFoundError):
            continue
    entries = []
    for v in reversed(logged):
        if start is not None and v <= start[2]:
            break
        entry = read_log(storage, v)[0]
        entries.append(entry)
        if start is None and entry.previous is None and entry.checkpoint == entry.version:  # a new start
            start = ({}, UnitTable.empty(), v - 1)
            break
    if start is None:
        raise damaged(f"{storage.display()}: version {latest.version} cannot be rebuilt from the log either (no "
                      "readable checkpoint, and the entries back to the dataset's start were vacuumed).")
    entries.reverse()
    units = check_counts(apply_entries(start[1], entries), latest.counts, storage.display(log_path(latest.version)))
    if state is None:  # a new start's entry holds the whole state only at a creation: replay from the oldest kept
        older = [read_log(storage, v)[0] for v in logged if v <= start[2]] if not start[0] else []
        state = apply_state(storage, start[0], [*older, *entries], summaries=False)
    return state, units


def root_of(storage: Storage, latest: LogEntry) -> dict:
    """The root of the version whose log entry is ``latest``, made from its checkpoint and chain (what a writer
    writes as ``manifest.json``): for versions committed after the root, and for a root that is lost."""
    known = None if storage.read_only else set(checkpoint_files(storage))
    start, chain = chain_to(storage, latest, known)
    cp = read_checkpoint(storage, start.version, start.tag)
    state = apply_state(storage, cp.state, chain)
    if not chain:
        state.update(version=latest.version, updated=latest.updated, commit=latest.commit, previous=latest.previous)
    ref = {"checkpoint": start.version, "chain": [e.version for e in chain], **latest.counts}
    if start.tag:
        ref["checkpoint_tag"] = start.tag
    return {**state, "format_version": LOG_FORMAT, "previous": latest.previous, "units": ref}


# --- writing ------------------------------------------------------------------------------------------------------
def inline_changes(added: dict[int, object], removed: set[int]) -> dict:
    """What a root lists of the changes since its checkpoint: all of them when at most INLINE_MAX units changed
    (a reader then reads the root, the checkpoint and its leaves, no log entry), else nothing."""
    if len(added) + len(removed) > INLINE_MAX:
        return {}
    return {"added": [u.to_json() for _, u in sorted(added.items())], "removed": sorted(removed)}


def leaf_level(units: int) -> int:
    return max(0, int(math.log(max(units, 1) / LEAF0, TIER))) if units > LEAF0 else 0


class LogWriter:
    """The writer's side of format v4: each version's log entry (created only if absent: the commit point) and root,
    checkpoints every CHECKPOINT_EVERY versions. It knows the chain since the last checkpoint and the units added
    since (for the next leaf). ``tag`` names its writer session in every file it writes for a version."""

    def __init__(self, storage: Storage, tag: str = "") -> None:
        self.storage = storage
        self.tag = check_tag(tag)
        self.checkpoint: int | None = None  #: None: the next version writes a checkpoint of every unit
        self.checkpoint_tag = ""  #: the tag of the checkpoint's version (its file name carries it)
        self.leaves: list[LeafRef] = []
        self.removed: set[int] = set()
        self.chain: list[int] = []  #: versions after the checkpoint
        self.since_added: dict[int, object] = {}  #: units added (or replaced) since the checkpoint
        self.since_removed: set[int] = set()
        self.base: tuple[int, str] | None = None  #: (version, digest of its record bytes) this version follows
        self.state: dict = {}  #: the last version's state fields

    def adopt(self, root: dict | None, source_digest: str, manifest) -> None:
        """Continue from an existing dataset (``manifest``, read from ``root`` whose bytes have
        ``source_digest``): a v3/v4 root (its checkpoint and chain), or a v1/v2 manifest (the next version starts
        the log with a checkpoint of every unit, chained to the v2 version's bytes)."""
        if manifest is None or root is None:
            return
        self.state = {k: v for k, v in manifest.state_json().items() if k not in PER_VERSION}
        version = int(root.get("version", 0))  # v1 manifests have no version number (they are version 0)
        if int(root.get("format_version", 0)) < 3:
            if int(root.get("format_version", 0)) >= 2 and source_digest:
                self.base = (version, source_digest)
            return
        ref = root["units"]
        self.checkpoint_tag = str(ref.get("checkpoint_tag") or "")
        cp = read_checkpoint(self.storage, int(ref["checkpoint"]), self.checkpoint_tag)
        self.checkpoint, self.leaves, self.removed = cp.version, cp.leaves, set(cp.removed)
        self.chain = [int(v) for v in ref.get("chain") or []]
        changes = root_changes(ref)
        if changes is None:
            changes = net_changes([read_log(self.storage, v)[0] for v in self.chain])
        self.since_added, self.since_removed = changes
        _entry, raw = read_log(self.storage, version)
        self.base = (version, digest(raw))

    def restart(self) -> None:
        """An overwrite: the next version is a checkpoint of the new (empty) dataset, chained to nothing."""
        self.checkpoint, self.checkpoint_tag, self.leaves, self.removed, self.chain = None, "", [], set(), []
        self.since_added, self.since_removed, self.base = {}, set(), None

    def record(self, added: dict[int, object], removed: set[int]) -> None:
        """Unit changes of the version being made (before ``write``)."""
        for uid in removed:
            self.since_added.pop(uid, None)
            self.since_removed.add(uid)
        for uid, u in added.items():
            self.since_added[uid] = u
            self.since_removed.discard(uid)

    def checkpoint_due(self) -> bool:
        """Whether the next version writes a checkpoint (after ``record`` of its changes)."""
        churn = len(self.since_added) + len(self.since_removed)
        return (self.checkpoint is None or len(self.chain) >= CHECKPOINT_MAX
                or (len(self.chain) >= CHECKPOINT_EVERY and churn >= LEAF_MIN))

    def write(self, state: dict, units, added: dict[int, object], removed: set[int],
              counts: dict, superseded: list[str] | None = None) -> bytes:
        """Write one version: its checkpoint when due, its log entry (created only if absent: the commit point),
        then the root. Returns the root's bytes. ``units``: every unit of the version (read only for a first
        checkpoint). VersionConflictError when another writer created this version first: nothing of this one
        is committed, and the caller must stop."""
        version = int(state["version"])
        due = self.checkpoint_due()
        changed = {k: v for k, v in state.items()
                   if k not in PER_VERSION and k not in DERIVED and self.state.get(k) != v}
        if "ticks" in changed and (delta := ticks_delta(self.state.get("ticks"), changed["ticks"])) is not None:
            del changed["ticks"]
            changed[TICKS_CHANGED] = delta
        wrote_stats = state.get("stats_files") != self.state.get("stats_files") and state.get("stats_files")
        entry = LogEntry(version=version, base=self.base[0] if self.base else 0,
                         checkpoint=version if due else self.checkpoint,
                         previous={"version": self.base[0], "digest": self.base[1]} if self.base else None,
                         updated=state.get("updated", ""), commit=state.get("commit") or {},
                         added=[u.to_json() for _, u in sorted(added.items())], removed=sorted(removed),
                         state=changed, counts=counts, stats_at=version if wrote_stats else None, tag=self.tag,
                         superseded=sorted(superseded) if superseded is not None and self.base else None)
        saved = (self.checkpoint, self.checkpoint_tag, self.leaves, self.removed, self.chain, self.since_added,
                 self.since_removed)
        if due:
            self._checkpoint(version, state, units, entry)
        raw = dumps(entry.to_json())
        try:
            create_version(self.storage, version, raw)
        except VersionConflictError:
            # nothing of this version counts: the in-memory history stays as it was (the caller stops anyway)
            (self.checkpoint, self.checkpoint_tag, self.leaves, self.removed, self.chain, self.since_added,
             self.since_removed) = saved
            raise
        chain = [] if due else [*self.chain, version]
        ref = {"checkpoint": entry.checkpoint, "chain": chain, **counts,
               **inline_changes(self.since_added, self.since_removed)}
        if self.checkpoint_tag:
            ref["checkpoint_tag"] = self.checkpoint_tag
        data = dumps({**state, "format_version": LOG_FORMAT, "previous": entry.previous, "units": ref})
        # The root is where readers start, not what makes the version: a root put late by a stalled writer after a
        # newer one is harmless, because readers go on to the log entries after the version it names.
        self.storage.put_bytes(MANIFEST, data)
        self.base = (version, digest(raw))
        self.state = {k: v for k, v in state.items() if k not in PER_VERSION}
        self.chain = chain
        return data

    # --- checkpoints ----------------------------------------------------------------------------------------
    def _checkpoint(self, version: int, state: dict, units: dict[int, object], entry: LogEntry) -> None:
        if self.checkpoint is None:  # a new dataset, an overwrite, or the first v3 version of a v1/v2 dataset
            self.leaves, self.removed = [], set()
            fresh = units.table() if hasattr(units, "table") else UnitTable.from_entries(units.values())
            if len(fresh):
                self.leaves = [self._put_leaf(fresh, leaf_level(len(fresh)))]
        else:
            self.removed = (self.removed | self.since_removed) - set(self.since_added)
            new = UnitTable.from_entries(self.since_added.values())
            if len(new):
                self.leaves = [*self.leaves, self._put_leaf(new, 0)]
            self._merge_tiers()
            if len(self.removed) > FULL_COMPACTION:
                top = max((x.level for x in self.leaves), default=0)
                self.leaves, self.removed = self._merge(self.leaves, top), set()
        cp = Checkpoint(version=version, state={**state, "format_version": LOG_FORMAT, "previous": entry.previous},
                        leaves=list(self.leaves), removed=sorted(self.removed), tag=self.tag)
        # named by this writer's tag: no other writer ever writes this name, so a plain put cannot replace theirs
        self.storage.put_bytes(checkpoint_path(version, self.tag), dumps(cp.to_json()))
        self.checkpoint, self.checkpoint_tag, self.chain, self.since_added, self.since_removed = (
            version, self.tag, [], {}, set())

    def _put_leaf(self, table: UnitTable, level: int) -> LeafRef:
        data = table.to_parquet()
        d = digest(data)
        ref = LeafRef(leaf_path(d), d, len(table), level)
        if not self.storage.exists(ref.path):
            self.storage.put_bytes(ref.path, data)
        return ref

    def _merge(self, leaves: list[LeafRef], level: int) -> list[LeafRef]:
        tables = [read_leaf(self.storage, ref) for ref in leaves]
        merged = UnitTable.layered(tables, self.removed)
        return [self._put_leaf(merged, level)] if len(merged) else []

    def _merge_tiers(self) -> None:
        """While the last TIER leaves are of one level, merge them into one leaf of the next level."""
        while len(self.leaves) >= TIER and len({x.level for x in self.leaves[-TIER:]}) == 1:
            level = self.leaves[-1].level
            self.leaves = [*self.leaves[:-TIER], *self._merge(self.leaves[-TIER:], level + 1)]

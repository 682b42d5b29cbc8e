"""Dataset versions (format v2): listing them, and ``vacuum``, which removes old versions and the files only they
name.

Every manifest write that changes a dataset is a version; its manifest is kept as ``_versions/vNNNNNNNNN.json``
and the files it names are never rewritten, so ``open_dataset(uri, version=N)`` reads exactly what version N
committed. Nothing is ever deleted except by ``vacuum``, which keeps the newest ``keep`` versions.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shards.cleanup import garbage, readable_records, record_ids
from shards.errors import CorruptManifestError, FormatVersionError
from shards.layout import STATS_DIR, is_temp_file, version_path
from shards.manifest import Manifest, list_versions, read_manifest
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.versions")


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


def read_kept(storage: Storage, latest: Manifest | None = None) -> tuple[list[Manifest], dict[int, str]]:
    """The manifest of every kept version that can be read, oldest first, ending with the latest (read 16 at a
    time), and the damaged ones: version -> what is wrong (one damaged file never hides the others)."""
    latest = latest or read_manifest(storage)
    older = [v for v in list_versions(storage) if v < latest.version]

    def one(v: int) -> Manifest | str:
        try:
            return read_manifest(storage, v)
        except (CorruptManifestError, FormatVersionError) as exc:
            return str(exc).split(". Run `actlake verify")[0]

    with ThreadPoolExecutor(16) as pool:
        got = dict(zip(older, pool.map(one, older), strict=True))
    return [m for m in got.values() if isinstance(m, Manifest)] + [latest], \
        {v: m for v, m in got.items() if isinstance(m, str)}


def kept_manifests(storage: Storage, latest: Manifest | None = None) -> list[Manifest]:
    """The manifest of every kept version that can be read, oldest first, ending with the latest."""
    return read_kept(storage, latest)[0]


def versions(uri: str, storage_options: StorageOptions | dict | None = None) -> list[VersionInfo]:
    """Every kept version of the dataset at ``uri``, oldest first (a damaged one listed with its problem)."""
    good, bad = read_kept(Storage(uri, storage_options))
    infos = [VersionInfo.of(m) for m in good] + [VersionInfo.damaged(v, p) for v, p in bad.items()]
    return sorted(infos, key=lambda i: i.version)


def chain_problems(storage: Storage, manifests: list[Manifest]) -> dict[int, str]:
    """Kept versions whose bytes are not what the next version recorded of them (``previous``): a version
    rewritten after it was committed, even consistently (its own units_digest recomputed)."""

    by_version = {m.version: m for m in manifests}
    out = {}
    for m in manifests:
        prev = by_version.get(m.previous_version) if m.previous_digest else None
        if prev is not None and prev.source_digest and prev.source_digest != m.previous_digest:
            out[prev.version] = (f"rewritten after it was committed: version {m.version} recorded its content as "
                                 f"{m.previous_digest}, the file now holds {prev.source_digest}")
    return out


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


def named_files(m: Manifest) -> set[str]:
    """Every file one version reads: its units, its statistics files, its artifacts."""
    return {u.path for u in m.units} | set(m.stats_files.values()) | {a.path for a in m.artifacts.values()}


def vacuum(uri: str, keep: int = 1, storage_options: StorageOptions | dict | None = None, dry_run: bool = False,
           break_lock: bool = False) -> VacuumReport:
    """Remove every version but the newest ``keep``, and the files no kept version (and no commit record) names.

    Runs under the dataset's write lock, so no writer is between writing a unit and committing it. A reader
    still reading a removed version loses its files: keep as many versions as readers may be pinned to.
    Order: version manifests first, then data, so that a vacuum stopped half-way leaves no kept version naming
    a missing file.
    """
    from shards.lock import WriteLock

    if keep < 1:
        raise ValueError(f"--keep {keep}: keep at least the latest version (1)")
    storage = Storage(uri, storage_options)
    read_manifest(storage)  # a clear error when there is no dataset, before the lock is taken
    lock = WriteLock(storage)
    lock.acquire(break_lock=break_lock)
    try:
        return _vacuum(storage, keep, dry_run)
    finally:
        lock.release_quietly()


def _still_named(storage: Storage, latest: Manifest, keep_set: list[int]) -> set[str]:
    """Every file a kept version names, and every unit a commit record names (committed, not yet folded)."""
    manifests = [m for m in kept_manifests(storage, latest) if m.version in keep_set or m is latest]
    named = set().union(*(named_files(m) for m in manifests))
    records, _bad = readable_records(storage, record_ids(storage))
    return named | {r.unit.path for r in records}


def _unneeded_stats(storage: Storage, latest: Manifest, named: set[str]) -> list[str]:
    """Statistics files no kept version reads (a v1 dataset's ``stats/<hook>.npz`` is what its latest reads)."""
    stats = [f"{STATS_DIR}/{f}" for f in storage.list(STATS_DIR) if f.endswith(".npz") and not is_temp_file(f)]
    if latest.stats_files:
        return [s for s in stats if s not in named]
    v1_stats = tuple(f"/{h}.npz" for h in latest.hooks)
    return [s for s in stats if s not in named and not s.endswith(v1_stats)]


def _vacuum(storage: Storage, keep: int, dry_run: bool) -> VacuumReport:
    latest = read_manifest(storage)  # again, under the lock
    kept_versions = [v for v in list_versions(storage) if v <= latest.version]
    drop = kept_versions[:-keep] if len(kept_versions) > keep else []
    keep_set = [v for v in kept_versions if v not in drop]
    _good, damaged = read_kept(storage, latest)
    still = sorted(set(damaged) & set(keep_set))
    if still:  # what it names is unknown: its files could be deleted from under it
        raise CorruptManifestError(f"{storage.display()}: kept version(s) {still} are damaged ({damaged[still[0]]}). "
                                   "`actlake verify --repair` sets them aside; then vacuum again.")
    named = _still_named(storage, latest, keep_set)
    files = sorted(set(garbage(storage, named)) | set(_unneeded_stats(storage, latest, named)))
    report = VacuumReport(uri=storage.display(), kept=keep_set or [latest.version], removed_versions=drop,
                          removed_files=files, dry_run=dry_run)
    if dry_run:
        return report
    for v in drop:
        storage.delete(version_path(v))
    for rel in files:
        storage.delete(rel)
    log.info("vacuumed %s: removed %d versions and %d files; kept versions %s", storage.display(), len(drop),
             len(files), keep_set)
    return report

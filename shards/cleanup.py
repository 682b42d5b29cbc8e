"""Which files of a folder belong to a dataset: what ``--overwrite`` and ``verify --repair`` may delete.

Only names the format makes are ever deleted (docs/format.md, "What actlake deletes"): the files a
manifest and its commit records name, unit files no record names (a killed writer's), and the
temporary siblings of those. Anything else in the folder, e.g. a user's ``data/notes.csv``, is left alone.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from shards.commits import CommitRecord
from shards.layout import (
    ARTIFACTS_DIR,
    CHECKPOINT_DIR,
    COMMITS_DIR,
    DATA_DIR,
    LEAF_DIR,
    LOG_DIR,
    MANIFEST,
    PENDING_DIR,
    STATS_DIR,
    VERSIONS_DIR,
    is_leaf_name,
    is_temp_file,
    is_versioned_stats_path,
    parse_checkpoint_name,
    parse_data_name,
    parse_unit_name,
    parse_version_name,
    record_path,
    stats_path,
    unit_commit_path,
)
from shards.manifest import Manifest
from shards.storage import Storage

log = logging.getLogger("actlake.cleanup")


def record_ids(storage: Storage, legacy: bool = False) -> list[int]:
    """Ids of the commit records present: pending ones (files named exactly ``_pending/unit-NNNNNN.json``), or
    (``legacy``) those formats v1-v3 kept under ``_commits/``."""
    folder = COMMITS_DIR if legacy else PENDING_DIR
    return sorted(i for i in (parse_unit_name(f) for f in storage.list(folder) if f.endswith(".json"))
                  if i is not None)


def modified_time(info: dict) -> float | None:
    """An object's last-modified time in seconds from its listing details (a disk's ``mtime``, S3's
    ``LastModified``), None when the store gives none."""
    t = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if t is None:
        return None
    return float(t.timestamp()) if hasattr(t, "timestamp") else float(t)


def pending_records(storage: Storage) -> dict[int, float | None]:
    """The pending records there are: unit id -> last-modified time (one listing with details)."""
    out = {}
    try:
        found = storage.find(PENDING_DIR)
    except FileNotFoundError:
        found = {}
    for path, info in found.items():
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".json") and (uid := parse_unit_name(name)) is not None:
            out[uid] = modified_time(info)
    return dict(sorted(out.items()))


def readable_records(storage: Storage, ids: list[int], legacy: bool = False
                     ) -> tuple[list[CommitRecord], dict[str, str]]:
    """The commit records of ``ids`` (pending, or ``legacy``) that parse and pass their checks (read 16 at a
    time: thousands of small objects on S3), and the problem of every other one by its path; records that are
    gone are skipped."""
    def read(uid: int) -> CommitRecord | str | None:
        try:
            return CommitRecord.read(storage, uid, legacy)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            return f"unreadable commit record ({type(exc).__name__}: {exc})"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(read, ids))
    good = [r for r in results if isinstance(r, CommitRecord)]
    bad = {record_path(uid, legacy): r for uid, r in zip(ids, results, strict=True) if isinstance(r, str)}
    return good, bad


def garbage(storage: Storage, named: set[str]) -> list[str]:
    """Unit files that no kept version or commit record names (``named``: their paths), temporary files of
    killed writers, and what a writer killed mid-commit left of format v3's metadata: checkpoints of versions
    that have no log entry and leaves no checkpoint lists. (Callers that delete hold the write lock: no writer
    is between writing a leaf and naming it.)"""
    out = []
    for d in (DATA_DIR, COMMITS_DIR, PENDING_DIR, STATS_DIR, VERSIONS_DIR, LOG_DIR, CHECKPOINT_DIR, LEAF_DIR):
        for f in storage.list(d):
            if is_temp_file(f) or (d == DATA_DIR and parse_data_name(f) is not None and f"{d}/{f}" not in named):
                out.append(f"{d}/{f}")
    return out + _unnamed_metadata(storage)


def _unnamed_metadata(storage: Storage) -> list[str]:
    from shards.errors import CorruptManifestError
    from shards.layout import checkpoint_path
    from shards.versionlog import checkpoint_files, live_checkpoints, read_checkpoint

    live = live_checkpoints(storage)
    orphans = sorted(set(checkpoint_files(storage)) - {checkpoint_path(v, tag) for v, tag in live})
    listed: set[str] = set()
    for v, tag in live:
        try:
            listed |= {ref.path for ref in read_checkpoint(storage, v, tag).leaves}
        except CorruptManifestError:
            return orphans  # a damaged checkpoint may list any leaf: keep them all (repair sets it aside first)
    leaves = [f"{LEAF_DIR}/{f}" for f in storage.list(LEAF_DIR) if is_leaf_name(f)]
    return orphans + [rel for rel in leaves if rel not in listed]


def _our_stats_files(storage: Storage, hooks: set[str]) -> list[str]:
    """``stats/<hook>.npz`` (v1) and ``stats/<hook>.vNNNNNNNNN.npz`` (v2) of ``hooks``."""
    out = []
    for f in storage.list(STATS_DIR):
        rel = f"{STATS_DIR}/{f}"
        if any(rel == stats_path(h) or is_versioned_stats_path(h, rel) for h in hooks):
            out.append(rel)
    return out


def dataset_files(storage: Storage, manifest: Manifest | None, hooks: list[str] = ()) -> list[str]:
    """Every file of the dataset: unit files and commit records, statistics, kept versions, artifacts, garbage
    (what a v1 overwrite, or the removal of a dataset a failed job created, deletes)."""
    files = [f"{DATA_DIR}/{f}" for f in storage.list(DATA_DIR) if parse_data_name(f) is not None]
    files += [unit_commit_path(i) for i in record_ids(storage, legacy=True)]
    files += [record_path(i) for i in record_ids(storage)]
    hook_names = {*hooks, *(manifest.hooks if manifest else ())}
    files += sorted({*_our_stats_files(storage, hook_names), *(stats_path(h) for h in hook_names)})
    files += [f"{VERSIONS_DIR}/{f}" for f in storage.list(VERSIONS_DIR) if parse_version_name(f) is not None]
    files += [f"{LOG_DIR}/{f}" for f in storage.list(LOG_DIR) if parse_version_name(f) is not None]
    files += [f"{CHECKPOINT_DIR}/{f}" for f in storage.list(CHECKPOINT_DIR) if parse_checkpoint_name(f) is not None]
    files += [f"{LEAF_DIR}/{f}" for f in storage.list(LEAF_DIR) if is_leaf_name(f)]
    files += [a.path for a in (manifest.artifacts.values() if manifest else ())]
    return files + [g for g in garbage(storage, set(files)) if g not in files]


def delete_dataset_files(storage: Storage, manifest: Manifest | None, hooks: list[str] = ()) -> int:
    """Delete what ``dataset_files`` names; how many names it had.

    Commit records go first, then the manifest, then data: stopped half-way, what is left is either still
    a readable dataset or unit files no record names (garbage), never records a later writer would fold.
    """
    files = dataset_files(storage, manifest, hooks)
    records = [f for f in files if f.startswith((COMMITS_DIR, PENDING_DIR))]
    for rel in records:
        storage.delete(rel)
    storage.delete(MANIFEST)
    # kept versions before data: stopped half-way, no version names a file that is gone
    history = (VERSIONS_DIR, LOG_DIR, CHECKPOINT_DIR)
    for rel in sorted((f for f in files if f not in records), key=lambda r: not r.startswith(history)):
        storage.delete(rel)
    if manifest is not None or records:
        log.info("removed the dataset at %s (%d files named by its manifest and commit records)",
                 storage.display(), len(files))
    return len(files)


def remove_empty_dirs(storage: Storage) -> None:
    """On a local disk, remove the dataset's folders (and its root) where they are empty, so that a removed
    dataset leaves no trace; a folder holding anything (a user's file, another writer's lock) stays."""
    if not storage.is_local:
        return  # object stores have no folders
    for rel in (DATA_DIR, COMMITS_DIR, PENDING_DIR, STATS_DIR, VERSIONS_DIR, LOG_DIR, LEAF_DIR, CHECKPOINT_DIR,
                ARTIFACTS_DIR, ""):
        try:
            os.rmdir(storage.path(rel))
        except OSError:
            pass

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
    COMMITS_DIR,
    DATA_DIR,
    MANIFEST,
    STATS_DIR,
    is_temp_file,
    parse_unit_name,
    stats_path,
    unit_commit_path,
    unit_data_path,
)
from shards.manifest import Manifest
from shards.storage import Storage

log = logging.getLogger("actlake.cleanup")


def record_ids(storage: Storage) -> list[int]:
    """Ids of the commit records present (files named exactly ``_commits/unit-NNNNNN.json``)."""
    return sorted(i for i in (parse_unit_name(f) for f in storage.list(COMMITS_DIR) if f.endswith(".json"))
                  if i is not None)


def readable_records(storage: Storage, ids: list[int]) -> tuple[list[CommitRecord], dict[str, str]]:
    """The commit records of ``ids`` that parse and pass their checks (read 16 at a time: thousands of small
    objects on S3), and the problem of every other one by its path; records that are gone are skipped."""
    def read(uid: int) -> CommitRecord | str | None:
        try:
            return CommitRecord.read(storage, uid)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            return f"unreadable commit record ({type(exc).__name__}: {exc})"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(read, ids))
    good = [r for r in results if isinstance(r, CommitRecord)]
    bad = {unit_commit_path(uid): r for uid, r in zip(ids, results, strict=True) if isinstance(r, str)}
    return good, bad


def garbage(storage: Storage, named: set[int]) -> list[str]:
    """Unit files that no commit record or manifest entry names, and temporary files of killed writers."""
    out = []
    for d in (DATA_DIR, COMMITS_DIR, STATS_DIR):
        for f in storage.list(d):
            uid = parse_unit_name(f)
            if is_temp_file(f) or (d == DATA_DIR and uid is not None and f.endswith(".parquet") and uid not in named):
                out.append(f"{d}/{f}")
    return out


def dataset_files(storage: Storage, manifest: Manifest | None, hooks: list[str] = ()) -> list[str]:
    """Every file the manifest (possibly None) and the commit records name, plus garbage; what overwrite deletes."""
    ids = set(record_ids(storage)) | {u.id for u in (manifest.units if manifest else [])}
    files = [p for i in sorted(ids) for p in (unit_data_path(i), unit_commit_path(i))]
    files += [stats_path(h) for h in sorted({*hooks, *(manifest.hooks if manifest else ())})]
    files += [a.path for a in (manifest.artifacts.values() if manifest else ())]
    return files + garbage(storage, ids)


def delete_dataset_files(storage: Storage, manifest: Manifest | None, hooks: list[str] = ()) -> int:
    """Delete what ``dataset_files`` names; how many names it had.

    Commit records go first, then the manifest, then data: stopped half-way, what is left is either still
    a readable dataset or unit files no record names (garbage), never records a later writer would fold.
    """
    files = dataset_files(storage, manifest, hooks)
    records = [f for f in files if f.startswith(COMMITS_DIR)]
    for rel in records:
        storage.delete(rel)
    storage.delete(MANIFEST)
    for rel in files:
        if rel not in records:
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
    for rel in (DATA_DIR, COMMITS_DIR, STATS_DIR, ARTIFACTS_DIR, ""):
        try:
            os.rmdir(storage.path(rel))
        except OSError:
            pass

"""What datasets a prefix holds (``actlake ls``): found level by level, one manifest read each, in parallel.

A recursive listing of a bucket (``find``) reads every object name below the prefix — every unit file, commit
record and log entry of every dataset; the walk here lists folders one level at a time (the folders of a level
at once) and stops descending at a folder holding a ``manifest.json``, so its cost grows with the number of
datasets and folders, not with their files (docs/benchmarks.md, "ls").
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shards.layout import MANIFEST
from shards.records import JsonRecord
from shards.storage import Storage

#: folders a dataset keeps for itself: never searched for other datasets
_INTERNAL = ("_", ".")


@dataclass
class DatasetSummary(JsonRecord):
    """One line of ``actlake ls``: what made a dataset and how big its newest version is."""

    uri: str
    dataset_id: str = ""
    model: str = ""
    modality: str = ""
    hooks: list[str] = field(default_factory=list)
    rows: int = 0
    units: int = 0
    bytes: int = 0
    version: int = 0  #: the newest version
    updated: str = ""  #: when it was committed (UTC)
    format_version: int = 0
    problem: str = ""  #: why the manifest could not be read ('' when it could)


def find_datasets(root: Storage, maxdepth: int = 4, threads: int = 16) -> list[str]:
    """Folders (relative to ``root``; '' for the root itself) that hold a dataset, at most ``maxdepth`` levels
    down, sorted."""
    level, found = [""], []
    with ThreadPoolExecutor(threads) as pool:
        for _depth in range(maxdepth + 1):
            listed = list(pool.map(root.entries, level))
            below = []
            for rel, (files, folders) in zip(level, listed, strict=True):
                if MANIFEST in files:
                    found.append(rel)
                    continue  # a dataset's own folders hold no other dataset
                below += [posixpath.join(rel, f) for f in folders if not f.startswith(_INTERNAL)]
            if not below:
                break
            level = below
    return sorted(found)


def summarize(root: Storage, rel: str) -> DatasetSummary:
    """The ``DatasetSummary`` of the dataset at ``rel``, from its root manifest alone (a format v3 root carries
    the counts; its unit list is not read)."""
    from shards.manifest import read_manifest

    storage = root.child(rel) if rel else root
    try:
        m = read_manifest(storage, lazy=True)
    except Exception as exc:  # noqa: BLE001 - list what can be listed, say why the rest cannot be
        return DatasetSummary(uri=storage.display(), problem=storage.scrub(str(exc)))
    config = m.config or {}
    details = m.provenance.details
    return DatasetSummary(
        uri=storage.display(), dataset_id=m.dataset_id, model=m.provenance.model.name if m.provenance.model else "",
        modality=str(config.get("modality") or details.get("modality") or _modality_of(details)),
        hooks=list(m.hooks), rows=m.num_rows, units=len(m.units), bytes=m.num_bytes, version=m.version,
        updated=m.updated, format_version=m.format_version)


def _modality_of(details: dict) -> str:
    """Datasets made before the modality was recorded: images say so by their provenance."""
    return "image" if "images" in details or "preprocess" in details else ("text" if "tokenizer" in details else "")


def list_datasets(root: Storage, maxdepth: int = 4, threads: int = 16,
                  on_found: Callable[[int], None] | None = None) -> list[DatasetSummary]:
    """``find_datasets`` then ``summarize`` each, ``threads`` manifests at a time, in path order."""
    found = find_datasets(root, maxdepth, threads)
    if on_found is not None:
        on_found(len(found))
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda rel: summarize(root, rel), found))

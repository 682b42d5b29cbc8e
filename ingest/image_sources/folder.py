"""A folder of images: files sorted by their path relative to the folder; id = file stem (relative path without
extension when stems repeat); an optional sidecar table (``metadata.csv``/``.parquet`` in the folder, or
``--metadata``) adds columns, joined on the file name."""

from __future__ import annotations

import posixpath

from ingest.image_sources.base import (
    IMAGE_EXTENSIONS,
    ImageSource,
    ImageSourceError,
    SourceKind,
    SourceOptions,
    read_table,
    scalar_columns,
)
from shards.columns import STIMULUS_ID
from shards.storage import Storage

_SIDECARS = ("metadata.csv", "metadata.parquet", "stimuli.csv", "stimuli.parquet")
_SIDECAR_KEYS = (STIMULUS_ID, "id", "file", "filename", "file_name", "image")


def _images(st: Storage) -> list[str]:
    return sorted(p for p in st.find() if p.lower().endswith(IMAGE_EXTENSIONS))


def matches(uri: str, st: Storage) -> bool:
    return st.is_dir()


def detects(uri: str, st: Storage) -> bool:
    return st.is_dir() and bool(_images(st))


def load(uri: str, st: Storage, opts: SourceOptions) -> ImageSource:
    files = _images(st)
    rel = [st.rel(p) for p in files]
    stems = [posixpath.splitext(posixpath.basename(r))[0] for r in rel]
    ids = stems if len(set(stems)) == len(stems) else [posixpath.splitext(r)[0] for r in rel]
    items = [st.uri_of(p) for p in files]
    sidecar = opts.metadata or next((posixpath.join(uri.rstrip("/"), name) for name in _SIDECARS
                                     if st.exists(name)), None)
    meta = _join_sidecar(sidecar, ids, rel, opts.storage_options) if sidecar else {}
    return ImageSource(uri, "folder", ids, items, meta, opts.storage_options)


def _join_sidecar(sidecar: str, ids: list[str], rel: list[str], so: dict) -> dict[str, list]:
    table = read_table(sidecar, so).to_pydict()
    key = next((k for k in _SIDECAR_KEYS if k in table), None)
    if key is None:
        raise ImageSourceError(f"metadata table {sidecar!r} needs a column naming the image (stimulus_id, id, "
                               f"file or filename); it has {sorted(table)}")
    index = {}
    for row, value in enumerate(table[key]):
        index[str(value)] = row
        index[posixpath.splitext(posixpath.basename(str(value)))[0]] = row
    missing = [i for i, r in zip(ids, rel, strict=True) if i not in index and r not in index]
    if missing:
        raise ImageSourceError(f"metadata table {sidecar!r} has no row for {len(missing)} images "
                               f"(e.g. {missing[:5]}) in column {key!r}")
    rows = [index.get(i, index.get(r)) for i, r in zip(ids, rel, strict=True)]
    return scalar_columns({name: [values[r] for r in rows] for name, values in table.items()}, (key, STIMULUS_ID))


SOURCE = SourceKind("folder", matches, detects, load)

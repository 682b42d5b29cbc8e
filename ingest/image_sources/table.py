"""A table (Parquet, CSV, JSON lines) of image paths or bytes: row order; id = ``--id-field`` (default
``stimulus_id`` or ``id`` when present), else the stem of the image path, else ``image_NN``. Paths are
relative to the table; the other scalar columns are metadata."""

from __future__ import annotations

import posixpath

from ingest.image_sources.base import (
    ImageSource,
    SourceKind,
    SourceOptions,
    ids_from,
    pick_image_field,
    read_table,
    scalar_columns,
)
from shards.columns import STIMULUS_ID
from shards.storage import Storage

TABLE_FORMATS = (".parquet", ".csv", ".jsonl", ".json")


def matches(uri: str, st: Storage) -> bool:
    return uri.lower().rstrip("/").endswith(TABLE_FORMATS)


def detects(uri: str, st: Storage) -> bool:
    return False  # a table may as well be a text corpus: images only when the model or --modality says so


def load(uri: str, st: Storage, opts: SourceOptions) -> ImageSource:
    data = read_table(uri, opts.storage_options).to_pydict()
    col = pick_image_field(list(data), opts.image_field, uri)
    base = posixpath.dirname(uri.rstrip("/"))
    items = []
    for v in data[col]:
        if isinstance(v, dict):  # HF-style {"bytes": ..., "path": ...}
            v = v.get("bytes") or v.get("path")
        if isinstance(v, str) and "://" not in v and not posixpath.isabs(v):
            v = posixpath.join(base, v)  # paths relative to the table
        items.append(v)
    paths = [v if isinstance(v, str) else None for v in data[col]]
    ids = ids_from(data, opts.id_field, paths if all(paths) else items, uri)
    meta = scalar_columns(data, (col, opts.id_field, STIMULUS_ID))
    return ImageSource(uri, "table", ids, items, meta, opts.storage_options)


SOURCE = SourceKind("table", matches, detects, load)

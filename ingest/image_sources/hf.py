"""A Hugging Face dataset saved with ``save_to_disk`` that has an ``Image`` column: row order; ids as for tables."""

from __future__ import annotations

from ingest.image_sources.base import ImageSource, SourceKind, SourceOptions, ids_from, pick_image_field, scalar_columns
from shards.columns import STIMULUS_ID
from shards.storage import Storage


def _image_columns(uri: str) -> list[str]:
    import datasets

    return [n for n, f in datasets.load_from_disk(uri).features.items() if isinstance(f, datasets.Image)]


def matches(uri: str, st: Storage) -> bool:
    return st.is_dir() and st.exists("dataset_info.json")


def detects(uri: str, st: Storage) -> bool:
    return matches(uri, st) and bool(_image_columns(uri))


def load(uri: str, st: Storage, opts: SourceOptions) -> ImageSource:
    import datasets

    ds = datasets.load_from_disk(uri)
    image_cols = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
    col = pick_image_field(list(ds.features), opts.image_field or (image_cols[0] if image_cols else None), uri)
    ds = ds.cast_column(col, datasets.Image(decode=False)) if col in image_cols else ds
    data = ds.to_dict()
    items = [v.get("bytes") or v.get("path") if isinstance(v, dict) else v for v in data[col]]
    paths = [v.get("path") if isinstance(v, dict) else None for v in data[col]]
    ids = ids_from(data, opts.id_field, paths if all(paths) else items, uri)
    return ImageSource(uri, "hf", ids, items, scalar_columns(data, (col, opts.id_field, STIMULUS_ID)))


SOURCE = SourceKind("hf", matches, detects, load)

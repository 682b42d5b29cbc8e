"""A Parquet table: one row per stimulus, an id column, list/fixed-size-list columns of features (one hook
each), and scalar columns carried as metadata. Rows keep the table's order."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from ingest.imports.source import FeatureImportError, FeatureSource, Layer
from shards.columns import STIMULUS_ID
from shards.storage import Storage


def load(src: str, id_field: str | None = None, storage_options: dict | None = None, **_) -> FeatureSource:
    import pyarrow.parquet as pq

    st = Storage(src, storage_options or {})
    try:
        parts = [st.rel(p) for p in sorted(st.find()) if p.endswith(".parquet")] if st.is_dir() else [""]
        table = pa.concat_tables([pq.read_table(io.BytesIO(st.get_bytes(rel))) for rel in parts])
    except (FileNotFoundError, ValueError):  # missing, or a folder without Parquet files (nothing to concatenate)
        raise FeatureImportError(f"Parquet features: {src!r} not found (looked at {st.display()})") from None
    key = id_field or next((c for c in (STIMULUS_ID, "id") if c in table.column_names), None)
    if key is None or key not in table.column_names:
        raise FeatureImportError(f"Parquet features: no id column {id_field or 'stimulus_id'!r} in {src!r}; columns: "
                           f"{table.column_names}. Name it with --id-field.")
    ids = [str(v) for v in table.column(key).to_pylist()]
    layers, meta = {}, {}
    for name in table.column_names:
        if name == key:
            continue
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
            arr = _stack(col, name)
            layers[name] = Layer(name, tuple(arr.shape[1:]), arr.dtype.name, lambda a, b, arr=arr: arr[a:b])
        elif pa.types.is_primitive(col.type) or pa.types.is_string(col.type):
            meta[name] = col.to_pylist()
    return FeatureSource(ids, layers, meta, {"layout": "parquet", "id_field": key, "layers": sorted(layers)})


def _stack(col: pa.Array, name: str) -> np.ndarray:
    values = col
    shape = []
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) or \
            pa.types.is_large_list(values.type):
        lengths = values.value_lengths() if not pa.types.is_fixed_size_list(values.type) else None
        width = values.type.list_size if lengths is None else None
        if lengths is not None:
            distinct = set(lengths.to_pylist())
            if len(distinct) != 1:
                raise FeatureImportError(f"column {name!r}: rows have different lengths {sorted(distinct)[:5]}")
            width = distinct.pop()
        shape.append(width)
        values = values.flatten()
    return values.to_numpy(zero_copy_only=False).reshape(len(col), *shape)

"""Hugging Face ``datasets`` view of a dataset."""

from __future__ import annotations

import pyarrow as pa

from shards.codecs import CODECS, get_codec


def to_hf(ds, hooks=None, columns=None):
    """An in-memory ``datasets.Dataset`` of ``ds`` (a ``shards.Dataset``); tensors as fixed-length lists, i.e. the
    ``list`` encoding
    (float16 kept, bfloat16 as exact float32)."""
    import datasets

    hooks = ds.schema.resolve_hooks(hooks, ds.storage.display())
    cols = ds.schema.check_columns(columns, ds.storage.display())
    tables = []
    for ui in range(len(ds.units)):
        t = ds.read_unit_table(ui, [*cols, *hooks])
        arrays = [t.column(c) for c in cols]
        for h in hooks:
            spec = ds.schema.hooks[h]
            arrays.append(CODECS["list"].encode(spec, get_codec(spec.encoding).decode(spec, t.column(h))))
        tables.append(pa.Table.from_arrays(arrays, names=[*cols, *hooks]))
    if not tables:
        raise ValueError(f"dataset {ds.storage.display()} has no committed units")
    return datasets.Dataset(pa.concat_tables(tables))

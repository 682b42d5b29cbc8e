"""Ray Data view of a dataset."""

from __future__ import annotations

import pyarrow as pa

from shards.codecs import get_codec
from shards.dtypes import storage_to_numpy


def to_ray(ds, hooks=None, columns=None, **read_kwargs):
    """A ``ray.data.Dataset`` of ``ds`` (a ``shards.Dataset``): one read task per unit file; tensors as
    (n, *shape) numpy arrays (bfloat16 as exact float32).

    Example::

        for batch in ds.to_ray(["resid.3"]).iter_torch_batches(batch_size=1024): ...
    """
    import ray.data

    hooks = ds.schema.resolve_hooks(hooks, ds.storage.display())
    cols = ds.schema.check_columns(columns, ds.storage.display())
    paths = [ds.storage.path(u.path) for u in ds.units]
    if not paths:
        raise ValueError(f"dataset {ds.storage.display()} has no committed units")
    rd = ray.data.read_parquet(paths, filesystem=None if ds.storage.is_local else ds.storage.fs,
                               columns=[*cols, *hooks], **read_kwargs)
    specs = {h: ds.schema.hooks[h] for h in hooks}

    def decode(batch: pa.Table) -> dict:
        out = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in cols}
        for h, spec in specs.items():
            arr = storage_to_numpy(get_codec(spec.encoding).decode(spec, batch.column(h)), spec.dtype)
            out[h] = arr.reshape(len(arr), *spec.shape)
        return out

    return rd.map_batches(decode, batch_format="pyarrow", zero_copy_batch=True)

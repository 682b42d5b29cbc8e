"""Bridges to Ray Data, Hugging Face datasets and torch DataLoader."""

from __future__ import annotations

import pyarrow as pa

from shards.dtypes import LIST_VALUE_TYPES, storage_to_float32
from shards.reader import Dataset, decode_tensor, open_dataset


def to_ray(ds: Dataset, hooks=None, columns=None, **read_kwargs):
    """Ray Data view of a dataset: one read task per unit file, tensors as (n, *shape) numpy.

    bfloat16 hooks arrive as exact float32 (numpy has no bfloat16).
    """
    import ray.data

    hooks = ds.schema.resolve_hooks(hooks, ds.storage.display())
    cols = ds._check_columns(columns)
    paths = [ds.storage.path(u["path"]) for u in ds.units]
    if not paths:
        raise ValueError(f"dataset {ds.storage.display()} has no committed units")
    fs = None if ds.storage.is_local else ds.storage.fs
    rd = ray.data.read_parquet(paths, filesystem=fs, columns=[*cols, *hooks], **read_kwargs)
    specs = {h: ds.schema.hooks[h] for h in hooks}

    def decode(batch: pa.Table) -> dict:
        out = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in cols}
        for h, spec in specs.items():
            arr = decode_tensor(spec, batch.column(h))
            if spec.dtype == "bfloat16":
                arr = storage_to_float32(arr, "bfloat16")
            out[h] = arr.reshape(len(arr), *spec.shape)
        return out

    return rd.map_batches(decode, batch_format="pyarrow", zero_copy_batch=True)


def to_hf(ds: Dataset, hooks=None, columns=None):
    """In-memory HF ``datasets.Dataset``; tensors as fixed-length lists (float16 kept, bfloat16 as float32)."""
    import datasets

    hooks = ds.schema.resolve_hooks(hooks, ds.storage.display())
    cols = ds._check_columns(columns)
    tables = []
    for ui in range(len(ds.units)):
        t = ds.read_unit_table(ui, [*cols, *hooks])
        arrays, names = [t.column(c) for c in cols], list(cols)
        for h in hooks:
            spec = ds.schema.hooks[h]
            arr = decode_tensor(spec, t.column(h))
            if spec.dtype == "bfloat16":
                arr = storage_to_float32(arr, "bfloat16")
            values = pa.array(arr.reshape(-1), LIST_VALUE_TYPES[spec.dtype])
            arrays.append(pa.FixedSizeListArray.from_arrays(values, spec.numel))
            names.append(h)
        tables.append(pa.Table.from_arrays(arrays, names=names))
    if not tables:
        raise ValueError(f"dataset {ds.storage.display()} has no committed units")
    return datasets.Dataset(pa.concat_tables(tables))


try:
    from torch.utils.data import IterableDataset as _TorchIterable
except ImportError:  # pragma: no cover - torch is a dependency
    _TorchIterable = object


class ActivationIterableDataset(_TorchIterable):
    """A torch ``IterableDataset`` yielding ready batches; use ``DataLoader(ds, batch_size=None)``.

    With ``num_workers > 0`` every DataLoader worker reads a disjoint share:
    worker ``w`` of rank ``r`` acts as rank ``r * num_workers + w`` of
    ``world_size * num_workers``. Call ``set_epoch`` between epochs.

    Example::

        tds = ActivationIterableDataset("s3://bucket/acts", "resid.3", batch_size=4096, shuffle=True)
        for batch in DataLoader(tds, batch_size=None, num_workers=2):
            ...
    """

    def __init__(self, uri: str, hooks=None, *, batch_size: int = 4096, shuffle: bool = False, seed: int = 0,
                 epoch: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 storage_options: dict | None = None, **iter_kwargs) -> None:
        self.uri, self.hooks, self.storage_options = uri, hooks, storage_options
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.iter_kwargs = iter_kwargs
        open_dataset(uri, storage_options).schema.resolve_hooks(hooks, uri)  # fail early

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        ds = open_dataset(self.uri, self.storage_options)
        kwargs = dict(self.iter_kwargs)
        kwargs.setdefault("prefetch", 1 if workers > 1 else 2)
        yield from ds.iter_batches(
            self.hooks, batch_size=self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
            rank=self.rank * workers + wid, world_size=self.world_size * workers, drop_last=self.drop_last,
            **kwargs,
        )


__all__ = ["to_ray", "to_hf", "ActivationIterableDataset"]

"""Streaming a hook's rows: shuffled or in row order, with ids and metadata, never the whole hook in memory."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from shards.reader import Dataset


def stream_rows(ds: Dataset, hook: str, batch_size: int = 4096, *, shuffle: bool = False, seed: int = 0,
                columns: list[str] | None = None, max_rows: int | None = None, dtype="float32",
                window: int | None = None) -> Iterator[dict]:
    """Batches of ``hook``'s rows flattened to ``(n, numel)`` (key ``"x"``) with the requested non-tensor
    ``columns`` (default: none), in row order or a seeded shuffle, stopping after ``max_rows`` rows.

    Example::

        for b in stream_rows(ds, "resid.3", columns=["example_id", "label"]):
            b["x"], b["example_id"], b["label"]
    """
    limit = ds.num_rows if max_rows is None else min(max_rows, ds.num_rows)
    it = ds.iter_batches(hook, batch_size=max(1, min(batch_size, limit)), shuffle=shuffle, seed=seed,
                         columns=list(columns or []), dtype=dtype, reuse_buffers=False, shuffle_window=window)
    gen = iter(it)
    seen = 0
    try:
        for batch in gen:
            if seen >= limit:
                return
            x = batch.pop(hook)
            take = min(len(x), limit - seen)
            out = {"x": x.reshape(len(x), -1)[:take]}
            out.update({c: v[:take] for c, v in batch.items()})
            seen += take
            yield out
    finally:
        gen.close()  # stops the prefetch thread


def sample_rows(ds: Dataset, hooks: list[str], n: int, seed: int) -> dict[str, torch.Tensor]:
    """A seeded sample of ``n`` rows (fewer if the dataset is smaller) of several hooks, the same rows for each."""
    it = ds.iter_batches(hooks, batch_size=max(1, min(n, ds.num_rows)), shuffle=True, seed=seed, columns=[],
                         reuse_buffers=False)
    gen = iter(it)
    try:
        batch = next(gen)
    finally:
        gen.close()
    return {h: batch[h].reshape(len(batch[h]), -1) for h in hooks}


def stream_units(ds: Dataset, hook: str, columns: list[str] | None = None, dtype=torch.float32) -> Iterator[tuple]:
    """Each committed unit in order, as ``(unit, rows)``: ``rows["x"]`` its ``hook`` rows flattened to
    ``(n, numel)``, plus the requested non-tensor ``columns`` (strings as object arrays, integer nulls as -1).
    For outputs that mirror the source unit for unit (same rows, same ids)."""
    from shards.codecs import get_codec
    from shards.dtypes import storage_to_torch
    from shards.reader import decode_metadata

    spec = ds.hook_spec(hook)
    cols = ds.schema.check_columns(columns, ds.storage.display()) if columns is not None else []
    for index, unit in enumerate(ds.units):
        table = ds.read_unit_table(index, [*cols, hook])
        x = storage_to_torch(get_codec(spec.encoding).decode(spec, table.column(hook)), spec.dtype)
        yield unit, {"x": x.to(dtype), **{c: decode_metadata(table.column(c)) for c in cols}}

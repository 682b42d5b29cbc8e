"""Joining a dataset's rows with an external table (labels, responses) on ``example_id`` / ``stimulus_id``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from shards.errors import ActlakeError


class JoinError(ActlakeError, ValueError):
    """The external table cannot be joined to the dataset's rows as asked."""


def join_rows(rows: pa.Table, table: pa.Table, on: list[str]) -> np.ndarray:
    """For each row of ``rows`` (the dataset's key columns, in row order) the index of its row in ``table``,
    or -1 when the table has none. Keys must be unique in ``table``.

    Example::

        idx = join_rows(ds.metadata_table(["stimulus_id"]), labels, ["stimulus_id"])
        y = labels.column("label").to_numpy()[idx[idx >= 0]]
    """
    missing = [c for c in on if c not in table.column_names or c not in rows.column_names]
    if missing:
        raise JoinError(f"cannot join on {missing}: the dataset has {rows.column_names}, the table has "
                        f"{table.column_names}")
    keys = table.select(on)
    for c in on:  # the dataset's key types: an int32 id column joins an int64 example_id
        keys = keys.set_column(keys.schema.get_field_index(c), c, keys.column(c).cast(rows.schema.field(c).type))
    keys = keys.append_column("__row", pa.array(np.arange(table.num_rows)))
    if keys.group_by(on).aggregate([("__row", "count")]).column("__row_count").to_numpy().max(initial=0) > 1:
        raise JoinError(f"the table has rows with the same {on}: each key must appear once")
    left = rows.select(on).append_column("__left", pa.array(np.arange(rows.num_rows)))
    joined = left.join(keys, keys=on, join_type="left outer").sort_by("__left")
    return joined.column("__row").fill_null(-1).to_numpy().astype(np.int64)

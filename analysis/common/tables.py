"""Reading a user's table (labels, responses, stimulus ids) from any URI: Parquet, CSV or JSON lines."""

from __future__ import annotations

import io

import pyarrow as pa

from shards.errors import ActlakeError
from shards.storage import Storage, StorageOptions


class TableError(ActlakeError, ValueError):
    """A table cannot be read or lacks what is asked of it."""


def _parquet(data: bytes) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


def _csv(data: bytes) -> pa.Table:
    import pyarrow.csv as pcsv

    return pcsv.read_csv(io.BytesIO(data))


def _jsonl(data: bytes) -> pa.Table:
    import pyarrow.json as pjson

    return pjson.read_json(io.BytesIO(data))


#: readers by file suffix
READERS = {".parquet": _parquet, ".pq": _parquet, ".csv": _csv, ".jsonl": _jsonl, ".json": _jsonl,
           ".ndjson": _jsonl}


def read_table(uri: str, storage_options: StorageOptions | dict | None = None) -> pa.Table:
    """The table at ``uri`` (local path, s3://..., any fsspec URI), read by its suffix.

    Example::

        labels = read_table("s3://bucket/pos_tags.parquet")
    """
    suffix = "." + uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    if suffix not in READERS:
        raise TableError(f"{uri}: cannot tell the table's format from its name; use a .parquet, .csv or .jsonl file")
    st, name = Storage.for_file(uri, storage_options)
    try:
        data = st.get_bytes(name)
    except FileNotFoundError:
        raise TableError(f"table {st.display(name)} does not exist") from None
    try:
        return READERS[suffix](data)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableError(f"table {st.display(name)} is not valid {suffix[1:]}: {exc}") from None

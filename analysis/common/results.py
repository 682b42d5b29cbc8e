"""Writing an analysis' results under one URI: JSON, JSON lines, Parquet tables, PNG figures."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.common.plots import figure_png
from shards.storage import Storage, StorageOptions


class Results:
    """An output URI (local folder, s3://..., any fsspec URI); every object is put whole.

    Example::

        out = Results("s3://bucket/runs/probe")
        out.json("summary.json", {...}); out.table("probe_results.parquet", table); out.figure("plot.png", fig)
    """

    def __init__(self, uri: str | Storage, storage_options: StorageOptions | dict | None = None) -> None:
        self.storage = uri if isinstance(uri, Storage) else Storage(uri, storage_options)

    def child(self, rel: str) -> Results:
        return Results(self.storage.child(rel)) if rel else self

    def display(self, rel: str = "") -> str:
        return self.storage.display(rel)

    def json(self, name: str, obj) -> None:
        self.storage.put_bytes(name, json.dumps(obj, indent=1, default=str).encode())

    def jsonl(self, name: str, rows: list[dict]) -> None:
        self.storage.put_bytes(name, "".join(json.dumps(r, default=str) + "\n" for r in rows).encode())

    def table(self, name: str, table: pa.Table | dict) -> None:
        buf = io.BytesIO()
        pq.write_table(table if isinstance(table, pa.Table) else pa.table(table), buf)
        self.storage.put_bytes(name, buf.getvalue())

    def figure(self, name: str, fig) -> None:
        self.storage.put_bytes(name, figure_png(fig))

    def read_json(self, name: str):
        return json.loads(self.storage.get_bytes(name))


def npy_bytes(a: np.ndarray) -> bytes:
    """An array as .npy bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def read_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)

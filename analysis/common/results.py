"""Writing an analysis' results under one URI: JSON, JSON lines, Parquet tables, PNG figures."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.common.plots import figure_png
from shards.storage import Storage, StorageOptions

#: whether a run draws its own figures and report.html: inside a sweep (``analysis/align/sweep.py``) they are left
#: to the sweep's one page unless --run-plots (at 78-92 stimuli drawing them cost more than the analyses)
_RUN_PAGES: ContextVar[bool] = ContextVar("actlake_run_pages", default=True)


@contextmanager
def run_pages(draw: bool) -> Iterator[None]:
    """Runs started inside the block draw their figures and report.html only if ``draw``; their results, per-hook
    records and run.json are written as ever (each run stays resumable and recorded)."""
    token = _RUN_PAGES.set(draw)
    try:
        yield
    finally:
        _RUN_PAGES.reset(token)


def draws_run_pages() -> bool:
    """False inside ``run_pages(False)``: figures and report pages are skipped."""
    return _RUN_PAGES.get()


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
        """The figure as a PNG (closed either way; not drawn inside ``run_pages(False)``)."""
        if not draws_run_pages():
            from analysis.common.plots import pyplot

            pyplot().close(fig)
            return
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

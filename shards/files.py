"""Open unit files in a bounded cache: their Parquet footers, and for local files the page-cache views.

Reading a large dataset touches thousands of files; each open one holds a footer, maybe a memory map
and its page tables. The cache keeps the ``capacity`` most recently used ones and drops the rest
(a dropped memory map is unmapped once no batch still views it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from shards.pages import MappedFile
from shards.storage import Storage


@dataclass
class OpenFile:
    """One unit file: its Parquet reader and, once asked for, its memory map and page views."""

    parquet: pq.ParquetFile
    local_path: str | None
    _mapped: MappedFile | None = None
    _pages: dict[tuple[int, str], list[np.ndarray] | None] = field(default_factory=dict)

    def page_rows(self, row_group: int, column: str, row_bytes: int) -> list[np.ndarray] | None:
        """Views of ``column``'s rows in ``row_group`` straight from the page cache (see shards.pages), or None."""
        if self.local_path is None:
            return None
        key = (row_group, column)
        if key not in self._pages:
            if self._mapped is None:
                self._mapped = MappedFile(self.local_path, self.parquet.metadata)
            self._pages[key] = self._mapped.column_rows(row_group, column, row_bytes)
        return self._pages[key]


class FileCache:
    """The ``capacity`` most recently used unit files of one dataset, opened on demand (thread-safe)."""

    def __init__(self, storage: Storage, capacity: int = 16) -> None:
        self.storage = storage
        self.capacity = capacity
        self._files: OrderedDict[str, OpenFile] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._files)

    def get(self, rel: str) -> OpenFile:
        with self._lock:
            f = self._files.get(rel)
            if f is not None:
                self._files.move_to_end(rel)
                return f
        f = self._open(rel)
        with self._lock:
            self._files[rel] = f
            while len(self._files) > self.capacity:
                self._files.popitem(last=False)
        return f

    def _open(self, rel: str) -> OpenFile:
        if self.storage.is_local:
            path = self.storage.path(rel)
            return OpenFile(self.storage.call("open", rel, lambda: pq.ParquetFile(path, memory_map=True),
                                              missing_ok=True), path)
        return OpenFile(pq.ParquetFile(self.storage.open_input(rel)), None)

"""Open unit files in a bounded cache: their Parquet footers, and for local files the page-cache views.

Reading a large dataset touches thousands of files; each open one holds a footer, maybe a memory map
and its page tables. The cache keeps the ``capacity`` most recently used ones and drops the rest
(a dropped memory map is unmapped once no batch still views it). Every file is checked against its
manifest entry when it is opened, and its pages when they are read (``shards.integrity``).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.integrity import check_footer, check_whole_file, corrupt, has_page_checksums, is_checksum_failure
from shards.manifest import UnitEntry
from shards.pages import MappedFile
from shards.storage import Storage, transient_errors

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def verify_pool() -> ThreadPoolExecutor:
    """One background thread per process for page checks (made again in a forked child, whose copy has
    no thread). ISA-L's CRC releases the GIL, so the check runs beside the reading thread."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="actlake-page-check"))
    return _POOL[1]


@dataclass
class OpenFile:
    """One unit file: its Parquet reader and, once asked for, its memory map and page views."""

    parquet: pq.ParquetFile
    local_path: str | None
    where: str  #: the file's URI as shown in errors
    page_checksums: bool = True  #: every page carries a CRC32 that reads check
    _mapped: MappedFile | None = None
    _pages: dict[tuple[int, str], Future] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def page_rows(self, row_group: int, column: str, row_bytes: int) -> list[np.ndarray] | None:
        """Views of ``column``'s rows in ``row_group`` straight from the page cache (see shards.pages), or None.

        Every page's CRC is checked before its rows are returned (CorruptDataError when it does not match).
        Why ahead, in a background thread: checking inline cost 11% of the reader's throughput at d=4096
        (docs/benchmarks.md); the first request for a column queues the check of its other row groups in
        this file, so that by the time they are read they are checked. A check still queued when its rows
        are needed is done inline instead of waited for."""
        if self.local_path is None:
            return None
        key = (row_group, column)
        with self._lock:
            if self._mapped is None:
                self._mapped = MappedFile(self.local_path, self.parquet.metadata, self.where)
            if not any(c == column for _g, c in self._pages):
                for g in range(self.parquet.metadata.num_row_groups):
                    if g != row_group:
                        self._pages[(g, column)] = verify_pool().submit(self._views, g, column, row_bytes)
            job = self._pages.get(key)
            if job is None or job.cancel():  # not started: do it here rather than wait behind others
                job = self._pages[key] = Future()
                job.set_running_or_notify_cancel()
                inline = True
            else:
                inline = False
        if inline:
            try:
                job.set_result(self._views(row_group, column, row_bytes))
            except BaseException as exc:
                job.set_exception(exc)
        return job.result()

    def _views(self, row_group: int, column: str, row_bytes: int) -> list[np.ndarray] | None:
        return self._mapped.column_rows(row_group, column, row_bytes, self.page_checksums)

    def read_row_group(self, index: int, columns: list[str]) -> pa.Table:
        # use_threads=False: one thread decodes fixed-size binary pages ~3x faster here than the pool does
        return self._decoding(lambda: self.parquet.read_row_group(index, columns=columns, use_threads=False))

    def read(self, columns: list[str] | None) -> pa.Table:
        return self._decoding(lambda: self.parquet.read(columns=columns))

    def _decoding(self, fn):
        try:
            return fn()
        except (OSError, pa.ArrowException) as exc:
            if is_checksum_failure(exc):
                raise corrupt(self.where, f"{type(exc).__name__}: {exc}") from None
            raise


def _remote_size(source) -> int | None:
    """A remote file's size: pyarrow's native files have a ``size()`` method, fsspec's a ``size`` field."""
    size = getattr(source, "size", None)
    return size() if callable(size) else size


class FileCache:
    """The ``capacity`` most recently used unit files of one dataset, opened on demand (thread-safe)."""

    def __init__(self, storage: Storage, capacity: int = 16,
                 on_missing: Callable[[UnitEntry], Exception] | None = None) -> None:
        self.storage = storage
        self.capacity = capacity
        self.on_missing = on_missing  #: the error a missing unit file becomes (the reader says why it is gone)
        self._files: OrderedDict[str, OpenFile] = OrderedDict()
        self._hashed: set[tuple[str, str]] = set()  #: (path, checksum) of old-format files already hashed whole
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._files)

    def get(self, unit: UnitEntry) -> OpenFile:
        rel = unit.path
        with self._lock:
            f = self._files.get(rel)
            if f is not None:
                self._files.move_to_end(rel)
                return f
        try:
            f = self.storage.call("open", rel, lambda: self._open(unit), missing_ok=True)
        except FileNotFoundError:
            if self.on_missing is None:
                raise
            raise self.on_missing(unit) from None
        with self._lock:
            self._files[rel] = f
            while len(self._files) > self.capacity:
                self._files.popitem(last=False)
        return f

    def _open(self, unit: UnitEntry) -> OpenFile:
        rel, where = unit.path, self.storage.display(unit.path)
        path = self.storage.path(rel) if self.storage.is_local else None
        source = path if path is not None else self.storage.open_read(rel)
        try:
            pf = pq.ParquetFile(source, memory_map=path is not None, page_checksum_verification=True)
        except (OSError, pa.ArrowException) as exc:
            if isinstance(exc, (FileNotFoundError, *transient_errors())):
                raise  # missing or unreachable, not damaged: Storage.call names (and retries) it
            raise corrupt(where, f"its Parquet footer cannot be read ({type(exc).__name__}: {exc})") from None
        size = os.path.getsize(path) if path is not None else _remote_size(source)
        check_footer(pf.metadata, size, unit, where)
        crc = has_page_checksums(pf.metadata)
        if path is not None and not crc and (rel, unit.checksum) not in self._hashed:
            # Written before page checksums: hash the whole file once per dataset handle instead.
            with open(path, "rb") as fh:
                check_whole_file(fh.read(), unit, where)
            self._hashed.add((rel, unit.checksum))
        return OpenFile(pf, path, where, crc)

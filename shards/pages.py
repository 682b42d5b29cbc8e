"""Zero-copy access to tensor columns of uncompressed local files, straight from the page cache.

Why not pyarrow here: decoding a FIXED_LEN_BYTE_ARRAY column copies every value into freshly allocated
Arrow buffers, and on these machines first-touching that memory costs more than the copy. An
uncompressed, PLAIN-encoded, required fixed-size column stores its rows as plain bytes inside each data
page, so a memory map of the file *is* the tensor: fastparquet parses the page headers, and we return
numpy views of the page payloads. Anything unexpected (compression, other encodings, dictionary pages,
nulls) returns None and the caller falls back to pyarrow. Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import mmap

import numpy as np
import pyarrow.parquet as pq

_HEADER_MAX = 1 << 16  # a page header without statistics is tens of bytes; tensor columns carry none


def _plain_rows(header) -> int | None:
    """Rows of a data page whose payload is nothing but PLAIN values, else None."""
    from fastparquet import parquet_thrift  # imported on first use: it loads pandas

    plain, types = parquet_thrift.Encoding.PLAIN, parquet_thrift.PageType
    if header.type == types.DATA_PAGE:
        h = header.data_page_header
        return h.num_values if h.encoding == plain else None
    if header.type == types.DATA_PAGE_V2:
        h = header.data_page_header_v2
        if h.num_nulls or h.definition_levels_byte_length or h.repetition_levels_byte_length:
            return None  # nulls or level bytes: not a plain required column
        return h.num_values if h.encoding == plain else None
    return None


def _crc32():
    """The fastest CRC32 at hand: ISA-L's runs at 17.1 GB/s on these machines, zlib's at 2.9
    (tests/benchmarks/bench_crc.py, docs/benchmarks.md): zlib would cost the zero-copy reader a third of its speed."""
    try:
        from isal.isal_zlib import crc32
    except ImportError:  # pragma: no cover - isal is a dependency; zlib gives the same values, slower
        from zlib import crc32
    return crc32


class MappedFile:
    """A memory-mapped local Parquet file whose fixed-size columns can be viewed without decoding."""

    def __init__(self, path: str, metadata: pq.FileMetaData, where: str = "") -> None:
        with open(path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.bytes = np.frombuffer(self.map, dtype=np.uint8)
        self.metadata = metadata
        self.where = where or path
        self.crc32 = _crc32()
        self._names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]

    def column_rows(self, row_group: int, column: str, row_bytes: int,
                    check_crc: bool = True) -> list[np.ndarray] | None:
        """The column's rows in ``row_group`` as ``(rows, row_bytes)`` uint8 views (one per data page), or None.

        ``check_crc``: every page's CRC32 is compared with its payload (CorruptDataError on a mismatch or a
        missing CRC), as pyarrow does when it decodes."""
        if column not in self._names:
            return None
        meta = self.metadata.row_group(row_group).column(self._names.index(column))
        if meta.compression != "UNCOMPRESSED" or meta.has_dictionary_page:
            return None
        from fastparquet.cencoding import NumpyIO, ThriftObject

        pos, end = meta.data_page_offset, meta.data_page_offset + meta.total_compressed_size
        pieces, rows = [], 0
        while pos < end:
            reader = NumpyIO(self.bytes[pos:min(pos + _HEADER_MAX, end)])
            try:
                header = ThriftObject.from_buffer(reader, "PageHeader")
            except Exception:  # noqa: BLE001 - anything unreadable: let pyarrow decode the column
                return None
            n, size, payload = _plain_rows(header), header.compressed_page_size, pos + reader.tell()
            if n is None or n * row_bytes != size:
                return None
            page = self.bytes[payload:payload + size]
            if check_crc:
                self._check_crc(header.crc, page, row_group, column)
            pieces.append(page.reshape(n, row_bytes))
            rows += n
            pos = payload + size
        return pieces if rows == self.metadata.row_group(row_group).num_rows else None

    def _check_crc(self, expected: int | None, page: np.ndarray, row_group: int, column: str) -> None:
        from shards.integrity import corrupt

        if expected is None:
            raise corrupt(self.where, f"a page of column {column!r} (row group {row_group}) has no checksum")
        got = self.crc32(page)
        if got != expected & 0xFFFFFFFF:  # Parquet stores the CRC as a signed 32-bit integer
            raise corrupt(self.where, f"page checksum mismatch in column {column!r}, row group {row_group}")

"""Zero-copy access to tensor columns of uncompressed local files, straight from the page cache.

Why not pyarrow here: decoding a FIXED_LEN_BYTE_ARRAY column copies every value
into freshly allocated Arrow buffers, and on these machines first-touching that
memory costs more than the copy. An uncompressed, PLAIN-encoded, required
fixed-size column stores its rows as plain bytes inside each data page, so a
memory map of the file *is* the tensor: we parse the page headers (Thrift
compact protocol, a few fields) and return numpy views of the page payloads.
Anything unexpected (compression, other encodings, dictionary pages) returns
None and the caller falls back to pyarrow. Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import mmap

import numpy as np
import pyarrow.parquet as pq

_DATA_PAGE, _DATA_PAGE_V2 = 0, 3
_PLAIN = 0


class _Compact:
    """Just enough of Thrift's compact protocol to read a Parquet PageHeader."""

    def __init__(self, buf, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def byte(self) -> int:
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, ttype: int) -> None:
        if ttype in (1, 2):  # booleans live in the type nibble
            return
        if ttype == 3:
            self.pos += 1
        elif ttype in (4, 5, 6):
            self.varint()
        elif ttype == 7:
            self.pos += 8
        elif ttype == 8:
            self.pos += self.varint()
        elif ttype in (9, 10):
            head = self.byte()
            size = head >> 4
            if size == 15:
                size = self.varint()
            for _ in range(size):
                self.skip(head & 0x0F)
        elif ttype == 11:
            size = self.varint()
            if size:
                kv = self.byte()
                for _ in range(size):
                    self.skip(kv >> 4)
                    self.skip(kv & 0x0F)
        elif ttype == 12:
            self.struct(lambda fid, t: self.skip(t))
        else:
            raise ValueError(f"unknown thrift type {ttype}")

    def struct(self, on_field) -> None:
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            delta, ttype = head >> 4, head & 0x0F
            fid = last + delta if delta else self.zigzag()
            last = fid
            on_field(fid, ttype)


def _page_header(buf, pos: int) -> tuple[dict, int]:
    """(fields we need, offset of the payload) of the PageHeader at ``pos``."""
    r = _Compact(buf, pos)
    out: dict = {}

    def data_header(prefix: str):
        def on(fid: int, ttype: int) -> None:
            if ttype == 5 and fid in (1, 2, 3, 4, 5, 6):
                out[f"{prefix}{fid}"] = r.zigzag()
            elif ttype in (1, 2) and prefix == "v2_" and fid == 7:
                out["v2_is_compressed"] = ttype == 1
            else:
                r.skip(ttype)
        return on

    def top(fid: int, ttype: int) -> None:
        if fid in (1, 2, 3) and ttype == 5:
            out[("type", "uncompressed", "compressed")[fid - 1]] = r.zigzag()
        elif fid == 5 and ttype == 12:
            r.struct(data_header("v1_"))
        elif fid == 8 and ttype == 12:
            r.struct(data_header("v2_"))
        else:
            r.skip(ttype)

    r.struct(top)
    return out, r.pos


class MappedFile:
    """A memory-mapped local Parquet file whose fixed-size columns can be viewed without decoding."""

    def __init__(self, path: str, metadata: pq.FileMetaData) -> None:
        with open(path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.metadata = metadata
        self._names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]

    def column_rows(self, row_group: int, column: str, row_bytes: int) -> list[np.ndarray] | None:
        """The column's rows in ``row_group`` as uint8 views (one per data page), or None."""
        try:
            j = self._names.index(column)
        except ValueError:
            return None
        meta = self.metadata.row_group(row_group).column(j)
        if meta.compression != "UNCOMPRESSED" or meta.has_dictionary_page:
            return None
        pos, end = meta.data_page_offset, meta.data_page_offset + meta.total_compressed_size
        pieces, rows = [], 0
        while pos < end:
            head, payload = _page_header(self.map, pos)
            size = head.get("compressed")
            if size is None:
                return None
            if head.get("type") == _DATA_PAGE:
                n, enc = head.get("v1_1"), head.get("v1_2")
            elif head.get("type") == _DATA_PAGE_V2:
                n, enc = head.get("v2_1"), head.get("v2_4")
                if head.get("v2_2", 0) or head.get("v2_5", 0) or head.get("v2_6", 0):
                    return None  # nulls or level bytes: not a plain required column
            else:
                return None
            if enc != _PLAIN or n is None or n * row_bytes != size:
                return None
            pieces.append(np.frombuffer(self.map, dtype=np.uint8, count=size, offset=payload).reshape(n, row_bytes))
            rows += n
            pos = payload + size
        if rows != self.metadata.row_group(row_group).num_rows:
            return None
        return pieces

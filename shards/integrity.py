"""What a reader checks in every unit file it opens and every page it reads (docs/format.md, "What readers verify").

On open (the footer only, no data read): the footer parses, and the file's size, row count, row groups
and ``example_id`` range (from the footer's column statistics) are those of its manifest entry, so a
truncated file, a unit copied over another or an edited manifest is refused before a row is returned.
On read: every data page's CRC32 (written since actlake 0.2: ``PAGE_CHECKSUMS_KEY`` in the file's
metadata) is checked, by pyarrow when it decodes and by ``shards.pages`` on the zero-copy path. Local
files written before page checksums are hashed whole once, on first open, against the manifest.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from shards.checksums import checksum
from shards.columns import EXAMPLE_ID
from shards.errors import CorruptDataError
from shards.manifest import UnitEntry

PAGE_CHECKSUMS_KEY = b"actlake.page_checksums"  #: file metadata: "crc32" when every page has a CRC


def corrupt(where: str, problem: str) -> CorruptDataError:
    """The error for a damaged unit file: names it, what is wrong and what to do."""
    advice = ("Nothing from it was returned. `actlake verify` lists every damaged unit; restore the file, or drop "
              "the unit with `actlake verify --repair --drop-damaged` and rerun the job to rewrite it.")
    return CorruptDataError(f"{where} is damaged: {problem}. {advice}", problem)


def has_page_checksums(metadata: pq.FileMetaData) -> bool:
    return (metadata.metadata or {}).get(PAGE_CHECKSUMS_KEY) == b"crc32"


def check_footer(metadata: pq.FileMetaData, size: int | None, unit: UnitEntry, where: str) -> None:
    """Refuse a file whose footer contradicts its manifest entry (size, rows, row groups, example ids)."""
    if size is not None and size != unit.bytes:
        raise corrupt(where, f"{size} bytes, the manifest says {unit.bytes}")
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    if metadata.num_rows != unit.rows or (unit.rows and groups != list(unit.row_groups)):
        raise corrupt(where, f"{metadata.num_rows} rows in row groups {groups}, the manifest says {unit.rows} "
                             f"in {list(unit.row_groups)}")
    found = example_id_range(metadata)
    if found is not None and unit.example_range is not None and found != tuple(unit.example_range):
        raise corrupt(where, f"example_id {found[0]}..{found[1]}, the manifest says "
                             f"{unit.example_range[0]}..{unit.example_range[1]} (a file of another unit?)")


def example_id_range(metadata: pq.FileMetaData) -> tuple[int, int] | None:
    """(min, max) example_id from the footer's statistics; None when the file has none."""
    names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
    if EXAMPLE_ID not in names or metadata.num_rows == 0:
        return None
    col = names.index(EXAMPLE_ID)
    lo, hi = [], []
    for g in range(metadata.num_row_groups):
        st = metadata.row_group(g).column(col).statistics
        if st is None or not st.has_min_max:
            return None
        lo.append(st.min)
        hi.append(st.max)
    return int(min(lo)), int(max(hi))


def check_whole_file(data, unit: UnitEntry, where: str) -> None:
    """The file's bytes against the manifest's checksum (for files without page checksums)."""
    got = checksum(data)
    if got != unit.checksum:
        raise corrupt(where, f"checksum {got}, the manifest says {unit.checksum}")


def is_checksum_failure(exc: BaseException) -> bool:
    """pyarrow's error for a page whose CRC does not match, or for bytes it cannot decode."""
    import pyarrow as pa

    return isinstance(exc, pa.ArrowInvalid) or (isinstance(exc, OSError) and "checksum" in str(exc).lower())

"""A dataset's unit list held as columns (format v3): read from Parquet, checked in vectorised passes, turned into
``UnitEntry`` objects only when one is asked for.

Why columns: at 100k units, building a Python object per unit cost more than reading the whole list (and every
reader paid it on open); the reader needs only a few columns of all units at once (ids, rows, row groups), and a
``UnitEntry`` of the few units it opens. ``IdDigest`` summarises a set of unit ids in two numbers that update in
O(1) per unit added or removed, for the statistics files (which named every unit id before).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.layout import MAX_UNIT_ID

SCHEMA = pa.schema([
    ("id", pa.int64()), ("path", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64()),
    ("checksum", pa.string()), ("row_groups", pa.list_(pa.int64())), ("example_start", pa.int64()),
    ("example_stop", pa.int64()), ("committed", pa.string()), ("skipped", pa.string()), ("tick", pa.string()),
])
#: the paths the format names for a unit: the v1 name or a v2 attempt's (``shards.layout``), checked in one pass
_PATH = r"^data/unit-(?P<id>\d{6,10})(?:-[0-9a-f]{8})?\.parquet$"


def _mix(ids: np.ndarray) -> np.ndarray:
    """splitmix64 of each id: a well-spread 64-bit hash, so that XOR-ing them summarises a set."""
    z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class IdDigest:
    """A set of units as (count, XOR of their ids' hashes) and, since format v4, the XOR of the hashes of (id,
    checksum): equal sets give equal digests, adding or removing a unit updates them in O(1) (an id is never in a
    set twice), and a unit rewritten under its id (a new attempt, other rows) changes ``content``, so statistics
    that still describe the old copy are told apart (``same``)."""

    count: int = 0
    xor: int = 0
    content: int | None = None  #: XOR of ``content_hash(id, checksum)``; None: not known (a v3 statistics file)

    @classmethod
    def of(cls, ids, checksums=None) -> IdDigest:
        """The digest of unit ``ids`` (with their ``checksums``, in the same order, when known)."""
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        content = None
        if checksums is not None:
            content = 0
            for uid, c in zip(arr.tolist(), checksums, strict=True):
                content ^= content_hash(uid, c)
        return cls(len(arr), int(np.bitwise_xor.reduce(_mix(arr), initial=np.uint64(0))), content)

    @classmethod
    def of_units(cls, units) -> IdDigest:
        """The digest of unit entries (anything with ``id`` and ``checksum``; a ``UnitTable`` column-wise)."""
        if isinstance(units, UnitTable):
            return cls.of(units.ids, units.table.column("checksum").to_pylist())
        units = list(units)
        return cls.of([u.id for u in units], [u.checksum for u in units])

    def toggled(self, unit_id: int, added: bool, checksum: str | None = None) -> IdDigest:
        """This digest with ``unit_id`` added or removed (``checksum``: the copy added or removed)."""
        h = int(_mix(np.asarray([unit_id], dtype=np.int64))[0])
        content = None
        if self.content is not None and checksum is not None:
            content = self.content ^ content_hash(unit_id, checksum)
        return IdDigest(self.count + (1 if added else -1), self.xor ^ h, content)

    def replaced(self, unit_id: int, old_checksum: str, new_checksum: str) -> IdDigest:
        """This digest with unit ``unit_id``'s copy ``old_checksum`` replaced by ``new_checksum``."""
        if self.content is None:
            return self
        return IdDigest(self.count, self.xor,
                        self.content ^ content_hash(unit_id, old_checksum) ^ content_hash(unit_id, new_checksum))

    def to_hex(self) -> str:
        """``xor`` and ``content`` as 32 hex digits (how a version's record keeps them: compact)."""
        return f"{self.xor:016x}{self.content or 0:016x}"

    @classmethod
    def from_hex(cls, count: int, text: str) -> IdDigest:
        if len(text) != 32:
            raise ValueError(f"unit digest {text!r} is not 32 hex digits")
        return cls(int(count), int(text[:16], 16), int(text[16:], 16))

    def same(self, other: IdDigest | None) -> bool:
        """The same units: ids, and the same copies of them wherever both digests know (statistics files written
        before format v4 record only the ids)."""
        if other is None or (self.count, self.xor) != (other.count, other.xor):
            return False
        return self.content is None or other.content is None or self.content == other.content


def content_hash(unit_id: int, checksum: str) -> int:
    """A 64-bit hash of one copy of a unit: its id and its file's checksum."""
    import xxhash

    return xxhash.xxh3_64_intdigest(f"{int(unit_id)}:{checksum}".encode())


class UnitTable(Sequence):
    """Unit entries sorted by id, as an Arrow table; ``table[i]`` is a ``UnitEntry`` (made on demand)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table.combine_chunks() if table.num_rows else table
        self.ids = self.table.column("id").to_numpy(zero_copy_only=False).astype(np.int64)
        self._cache: dict[int, object] = {}

    # --- building ---------------------------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> UnitTable:
        return cls(SCHEMA.empty_table())

    @classmethod
    def from_entries(cls, entries: Iterable) -> UnitTable:
        """From ``UnitEntry`` objects (any order; an id given twice keeps the last)."""
        by_id = {e.id: e for e in entries}
        rows = [by_id[i] for i in sorted(by_id)]
        return cls(pa.table({
            "id": pa.array([e.id for e in rows], pa.int64()), "path": [e.path for e in rows],
            "rows": pa.array([e.rows for e in rows], pa.int64()),
            "bytes": pa.array([e.bytes for e in rows], pa.int64()),
            "checksum": [e.checksum for e in rows],
            "row_groups": pa.array([list(e.row_groups) for e in rows], pa.list_(pa.int64())),
            "example_start": pa.array([e.example_range[0] if e.example_range else None for e in rows], pa.int64()),
            "example_stop": pa.array([e.example_range[1] if e.example_range else None for e in rows], pa.int64()),
            "committed": [e.committed for e in rows],
            "skipped": [json.dumps([s.to_json() for s in e.skipped]) if e.skipped else None for e in rows],
            "tick": [e.tick or None for e in rows]}, schema=SCHEMA))

    @classmethod
    def from_json_entries(cls, dicts: list[dict]) -> UnitTable:
        """From unit entries as the format writes them (JSON objects; any order, an id given twice keeps the last),
        without a ``UnitEntry`` per unit: ~10x faster for the thousands a root or a chain of log entries lists.
        ``check`` (run on every unit list a manifest is made of) then checks them all at once; a missing or
        mistyped field is a ValueError here."""
        rows = list({int(d["id"]): d for d in dicts}.values())
        try:
            ranges = [d.get("example_range") for d in rows]
            skipped = [d.get("skipped") for d in rows]
            table = pa.table({
                "id": pa.array([d["id"] for d in rows], pa.int64()), "path": [str(d["path"]) for d in rows],
                "rows": pa.array([d["rows"] for d in rows], pa.int64()),
                "bytes": pa.array([d["bytes"] for d in rows], pa.int64()),
                "checksum": [str(d["checksum"]) for d in rows],
                "row_groups": pa.array([d["row_groups"] for d in rows], pa.list_(pa.int64())),
                "example_start": pa.array([r[0] if r else None for r in ranges], pa.int64()),
                "example_stop": pa.array([r[1] if r else None for r in ranges], pa.int64()),
                "committed": [str(d.get("committed", "")) for d in rows],
                "skipped": [json.dumps(s) if s else None for s in skipped],
                "tick": [str(d["tick"]) if d.get("tick") else None for d in rows]}, schema=SCHEMA)
        except KeyError as exc:
            raise ValueError(f"a unit entry has no {exc}") from None
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, IndexError) as exc:
            raise ValueError(f"a unit entry is malformed ({exc})") from None
        order = np.argsort(table.column("id").to_numpy(), kind="stable")
        return cls(table.take(pa.array(order)) if len(order) and np.any(np.diff(order) < 0) else table)

    @classmethod
    def from_parquet(cls, data: bytes) -> UnitTable:
        return cls(pq.read_table(io.BytesIO(data), schema=SCHEMA))

    def to_parquet(self) -> bytes:
        buf = io.BytesIO()
        pq.write_table(self.table, buf, compression="zstd", write_statistics=["id"])
        return buf.getvalue()

    @staticmethod
    def layered(tables: list[UnitTable], removed: Iterable[int] = ()) -> UnitTable:
        """The union of ``tables`` where a later table's entry of an id replaces an earlier one's, less the
        ``removed`` ids; sorted by id."""
        parts = [t.table for t in tables if len(t)]
        if not parts:
            return UnitTable.empty()
        table = pa.concat_tables(parts)
        order = np.arange(table.num_rows)
        ids = table.column("id").to_numpy()
        # the last occurrence of each id wins: unique over the reversed ids gives each id's last position
        _, last = np.unique(ids[::-1], return_index=True)
        keep = np.sort(order[::-1][last])
        gone = np.asarray(sorted(set(removed)), dtype=np.int64)
        if len(gone):
            keep = keep[~np.isin(ids[keep], gone)]
        order = keep[np.argsort(ids[keep], kind="stable")]  # one take: sorted by id
        if len(order) == table.num_rows and not np.any(np.diff(order) < 0):
            return UnitTable(table)  # already unique and sorted (leaves of disjoint id ranges, in order)
        return UnitTable(table.take(pa.array(order)))

    # --- reading ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if i not in self._cache:
            self._cache[i] = self._entry(i)
        return self._cache[i]

    def __iter__(self) -> Iterator:
        for batch in self.table.to_batches(max_chunksize=65536):
            for d in batch.to_pylist():
                yield self._from_row(d)

    def _entry(self, i: int):
        return self._from_row(self.table.slice(i, 1).to_pylist()[0])

    @staticmethod
    def _from_row(d: dict):
        from shards.units import SkippedInput, UnitEntry

        er = (d["example_start"], d["example_stop"]) if d["example_start"] is not None else None
        return UnitEntry(id=d["id"], path=d["path"], rows=d["rows"], bytes=d["bytes"], checksum=d["checksum"],
                         row_groups=tuple(d["row_groups"]), example_range=er, committed=d["committed"] or "",
                         skipped=tuple(SkippedInput.from_json(s) for s in json.loads(d["skipped"]))
                         if d["skipped"] else (), tick=d["tick"] or "")

    def column(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy(zero_copy_only=False)

    @property
    def total_rows(self) -> int:
        return int(pc.sum(self.table.column("rows")).as_py() or 0)

    @property
    def total_bytes(self) -> int:
        return int(pc.sum(self.table.column("bytes")).as_py() or 0)

    def row_group_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every row group of every unit, in order: its unit's index, its index in the unit, its rows."""
        lists = self.table.column("row_groups").combine_chunks()
        sizes = np.asarray(lists.value_lengths().to_numpy(zero_copy_only=False), dtype=np.int64)
        unit = np.repeat(np.arange(len(self), dtype=np.int64), sizes)
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        index = np.arange(len(unit), dtype=np.int64) - starts
        rows = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
        return unit, index, rows

    def paths(self) -> list[str]:
        return self.table.column("path").to_pylist()

    def check(self) -> None:
        """What ``UnitEntry.check`` checks, for every unit in a few vectorised passes: ids unique, in range and
        sorted; each path the one the format names for its id (never ``../x`` or absolute); rows equal to the
        sum of the row groups. ValueError naming the first offender."""
        if len(self) == 0:
            return
        ids = self.ids
        if ids.min() < 0 or ids.max() > MAX_UNIT_ID:
            raise ValueError(f"unit id out of range 0..{MAX_UNIT_ID}")
        if np.any(np.diff(ids) <= 0):
            dup = ids[1:][np.diff(ids) == 0]
            raise ValueError(f"units {sorted(set(dup.tolist()))[:10]} are listed more than once" if len(dup)
                             else "the unit list is not sorted by id")
        paths = self.table.column("path")
        named = pc.extract_regex(paths, _PATH)
        ok = pc.is_valid(named).to_numpy(zero_copy_only=False)
        if ok.all():
            stems = pc.struct_field(named, [0]).to_numpy(zero_copy_only=False).astype(np.int64)  # the id group
            ok = stems == ids
        if not ok.all():
            i = int(np.argmin(ok))
            raise ValueError(f"unit {ids[i]} has path {paths[i].as_py()!r}; the format names it "
                             f"data/unit-{ids[i]:06d}.parquet or data/unit-{ids[i]:06d}-<8 hex>.parquet")
        rows = self.column("rows")
        sums = pc.list_value_length(self.table.column("row_groups"))  # presence; sums below
        _unit, _index, group_rows = self.row_group_arrays()
        totals = np.bincount(_unit, weights=group_rows, minlength=len(self)).astype(np.int64)
        bad = (rows != totals) | (rows < 0) | (self.column("bytes") < 0) | pc.is_null(sums).to_numpy(
            zero_copy_only=False)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"unit {ids[i]}: rows {rows[i]} != sum of row groups")


class LazyUnitTable(Sequence):
    """A v3 root's unit list, read when first used: what a reader opens with (``open_dataset``). Opening then reads
    the root and its checkpoint record (a few kB whatever the size) and answers ``len``, rows and bytes from the
    counts the root records; the leaves and log entries are read, and every entry checked as ``UnitTable.check``
    does (and against those counts), before the first unit is used: before any row is read.

    Why: reading and checking 100k entries costs ~30 ms locally, 10x a 1k-unit dataset's whole open, and a job
    that only reads a dataset's description (``info``, a planner) never needs them."""

    def __init__(self, load, counts: dict, where: str) -> None:
        self._load, self._counts, self._where, self._table = load, counts, where, None

    def loaded(self) -> UnitTable:
        """The unit list (read and checked on the first call); CorruptManifestError naming the root and the fix
        when it cannot be read or is damaged."""
        if self._table is None:
            from shards.errors import CorruptManifestError

            try:
                table = self._load()
                table.check()
            except (KeyError, ValueError, TypeError) as exc:
                detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise CorruptManifestError(f"{self._where} is damaged: {detail}. Run `actlake verify --repair URI` "
                                           "to rebuild it from the commit records.") from None
            self._table = table
        return self._table

    def check(self) -> None:
        """Checked when loaded (``loaded``)."""

    def __len__(self) -> int:
        return int(self._counts["units"])

    @property
    def total_rows(self) -> int:
        return int(self._counts["rows"])

    @property
    def total_bytes(self) -> int:
        return int(self._counts["bytes"])

    def __getitem__(self, i):
        return self.loaded()[i]

    def __iter__(self) -> Iterator:
        return iter(self.loaded())

    def __getattr__(self, name: str):
        if name.startswith("_"):  # never load for dunder/private lookups (copy, pickle)
            raise AttributeError(name)
        return getattr(self.loaded(), name)

    def __reduce__(self):
        return UnitTable, (self.loaded().table,)

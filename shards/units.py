"""One committed unit as every format version lists it (``UnitEntry``), the inputs a unit left out on purpose
(``SkippedInput``), and the digest of a unit list: what manifests, commit records, log entries and unit tables
share (a module of its own, so that none of them imports another to get it)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shards.layout import check_unit_id, is_unit_data_path, unit_data_path
from shards.records import JsonRecord


@dataclass(frozen=True)
class SkippedInput(JsonRecord):
    """An input left out of a unit on purpose (e.g. an unreadable image with ``--on-bad-image skip``)."""

    stimulus_id: str
    example_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class UnitEntry:
    """One committed unit as the manifest lists it."""

    id: int
    path: str
    rows: int
    bytes: int
    checksum: str
    row_groups: tuple[int, ...]
    example_range: tuple[int, int] | None
    committed: str
    skipped: tuple[SkippedInput, ...] = ()
    tick: str = ""  #: the scheduled tick that wrote the unit, if one did

    def to_json(self) -> dict:
        d = {"id": self.id, "path": self.path, "rows": self.rows, "bytes": self.bytes, "checksum": self.checksum,
             "row_groups": list(self.row_groups),
             "example_range": list(self.example_range) if self.example_range is not None else None,
             "committed": self.committed}
        if self.skipped:
            d["skipped"] = [s.to_json() for s in self.skipped]
        if self.tick:
            d["tick"] = self.tick
        return d

    @classmethod
    def from_json(cls, d: dict) -> UnitEntry:
        """Parse and check an entry (from a manifest or a commit record); ValueError naming what is wrong."""
        er = d.get("example_range")
        entry = cls(id=check_unit_id(d["id"]), path=d["path"], rows=int(d["rows"]), bytes=int(d["bytes"]),
                    checksum=str(d["checksum"]), row_groups=tuple(int(r) for r in d["row_groups"]),
                    example_range=(int(er[0]), int(er[1])) if er else None, committed=d.get("committed", ""),
                    skipped=tuple(SkippedInput.from_json(s) for s in d.get("skipped") or ()),
                    tick=str(d.get("tick", "")))
        entry.check()
        return entry

    def check(self) -> None:
        """The entry's path is the one its id names (never ``../x`` or absolute); its counts agree."""
        if not is_unit_data_path(self.id, self.path):
            raise ValueError(f"unit {self.id} has path {self.path!r}; the format names it {unit_data_path(self.id)!r} "
                             f"or data/unit-{self.id:06d}-<8 hex>.parquet")
        if self.rows < 0 or self.bytes < 0 or sum(self.row_groups) != self.rows:
            raise ValueError(f"unit {self.id}: rows {self.rows} != sum of row groups {list(self.row_groups)}")



def units_digest(units: list[dict]) -> str:
    """A hash of the manifest's unit list as JSON: an edited or damaged list no longer matches it."""
    import xxhash

    return xxhash.xxh3_128_hexdigest(json.dumps(units, sort_keys=True, separators=(",", ":")).encode())

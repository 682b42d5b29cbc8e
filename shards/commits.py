"""Commit records: a unit counts once its record exists.

A record is what a unit writer (in a Ray actor, say) hands to the dataset's one writer, which folds it
into the manifest: the unit's manifest entry, the schema it was written with, its statistics. Format v4 writes
it to ``_pending/unit-NNNNNN.json`` and removes it once a version names the unit (the unit's statistics stay in
its file's footer); formats v1-v3 kept every record under ``_commits/``, which v4 still reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from shards.layout import record_path
from shards.manifest import FORMAT_VERSION, UnitEntry
from shards.schema import DatasetSchema
from shards.stats import HookStats
from shards.storage import Storage


@dataclass
class CommitRecord:
    unit: UnitEntry
    schema: DatasetSchema
    stats: dict[str, HookStats] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: the dataset the unit was written for ("" in records written before format v4): a writer folds only its own
    #: dataset's records, so an overwrite stopped before it removed the old records loses nothing and mixes nothing
    dataset_id: str = ""

    @property
    def id(self) -> int:
        return self.unit.id

    @property
    def schema_fingerprint(self) -> str:
        return self.schema.fingerprint()

    def to_json(self) -> dict:
        out = {"format_version": self.format_version, **self.unit.to_json(), "schema": self.schema_fingerprint,
               "schema_json": self.schema.to_json(), "stats": {n: s.to_json() for n, s in self.stats.items()}}
        return {**out, "dataset_id": self.dataset_id} if self.dataset_id else out

    @classmethod
    def from_json(cls, d: dict) -> CommitRecord:
        return cls(unit=UnitEntry.from_json(d), schema=DatasetSchema.from_json(d["schema_json"]),
                   stats={n: HookStats.from_json(s) for n, s in (d.get("stats") or {}).items()},
                   format_version=int(d.get("format_version", FORMAT_VERSION)),
                   dataset_id=str(d.get("dataset_id") or ""))

    def belongs_to(self, manifest) -> bool:
        """Whether this record is of ``manifest``'s dataset: its own ``dataset_id``; a record written before format
        v4 (no id) unless the dataset replaced another (an overwrite), whose records all predate it."""
        if self.dataset_id:
            return self.dataset_id == manifest.dataset_id
        return not manifest.replaces

    def write(self, storage: Storage, fsync: bool = True) -> None:
        """Put the pending record (``fsync=False``: as a writer that does not flush its unit files either)."""
        storage.put_bytes(record_path(self.id), (json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n").encode(),
                          fsync)

    @classmethod
    def read(cls, storage: Storage, unit_id: int, legacy: bool = False) -> CommitRecord:
        """The pending record of ``unit_id`` (``legacy``: the kept one a format v1-v3 writer wrote)."""
        return cls.from_json(json.loads(storage.get_bytes(record_path(unit_id, legacy))))

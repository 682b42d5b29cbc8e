"""Opening a dataset for writing and committing units into its manifest."""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from shards.errors import DatasetExistsError, DatasetNotFoundError, SchemaMismatchError
from shards.lock import WriteLock
from shards.manifest import (
    COMMITS_DIR,
    DATA_DIR,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    STATS_DIR,
    code_version,
    dumps,
    now_iso,
    parse_unit_name,
    read_manifest,
)
from shards.schema import COMPRESSIONS, ENCODINGS, DatasetSchema, infer_column_type, parse_hooks
from shards.stats import HookStats
from shards.storage import Storage, redact
from shards.unit_writer import UnitWriter

log = logging.getLogger("actlake.writer")
MODES = ("create", "append", "overwrite")


def create_dataset(
    uri: str,
    hooks: dict,
    columns: dict | None = None,
    mode: str = "create",
    *,
    compression: str = "none",
    encoding: str = "binary",
    row_group_bytes: int = 32 << 20,
    provenance: dict | None = None,
    config: dict | None = None,
    storage_options: dict | None = None,
    compute_stats: bool = True,
    break_lock: bool = False,
    lock_ttl: float = 300.0,
    fsync: bool = True,
) -> DatasetWriter:
    """Open a dataset for writing.

    ``mode``: ``"create"`` refuses an existing dataset; ``"append"`` opens an
    existing one with the same schema (or creates it) and keeps its committed
    units, which is how a killed job resumes; ``"overwrite"`` deletes what is
    there first. ``columns`` maps metadata column names to types
    (``{"label": "string"}``); ``None`` infers them from the first unit.
    ``provenance`` (model, corpus, tokenizer, packing) and ``config`` (the job
    configuration; secrets are removed) go into the manifest. ``fsync=False``
    skips flushing unit files to the disk before their commit (local disks
    only): a killed process still loses nothing, a power cut may.

    Example::

        w = create_dataset("s3://bucket/acts", hooks={"resid.3": {"shape": [384], "dtype": "float16"}})
        w.write_unit(0, {"example_id": ids, "position": pos, "resid.3": acts})
        w.close()
    """
    return DatasetWriter(
        uri, hooks, columns, mode, compression=compression, encoding=encoding,
        row_group_bytes=row_group_bytes, provenance=provenance, config=config,
        storage_options=storage_options, compute_stats=compute_stats, break_lock=break_lock,
        lock_ttl=lock_ttl, fsync=fsync,
    )


class DatasetWriter:
    """The one writer of a dataset: holds its lock and folds commit records into the manifest."""

    def __init__(self, uri, hooks, columns=None, mode="create", *, compression="none", encoding="binary",
                 row_group_bytes=32 << 20, provenance=None, config=None, storage_options=None,
                 compute_stats=True, break_lock=False, lock_ttl=300.0, fsync=True) -> None:
        # Validate everything before touching storage: bad input writes nothing.
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}; use one of {COMPRESSIONS}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
        if row_group_bytes < 1 << 16:
            raise ValueError(f"row_group_bytes={row_group_bytes} is too small; use tens of MB (default 32 MiB)")
        self.schema = DatasetSchema(parse_hooks(hooks, encoding), {})
        if columns is not None:
            self.schema.columns = {n: str(t) for n, t in columns.items()}
            self.schema.arrow_schema()  # raises on unknown types
        self._columns_fixed = columns is not None
        self.storage = Storage(uri, storage_options)
        self.uri = uri
        self.compression = compression
        self.row_group_bytes = int(row_group_bytes)
        self.compute_stats = compute_stats
        self.fsync = fsync
        self._storage_options = dict(storage_options or {})
        self.units: dict[int, dict] = {}
        self.stats: dict[str, HookStats] = {}
        self._closed = False

        existing = self._existing_manifest()
        if existing is not None and mode == "create":
            raise DatasetExistsError(
                f"a dataset already exists at {self.storage.display()} "
                f"({len(existing.get('units', []))} committed units). Use mode='append' to resume or "
                "add units, or mode='overwrite' to replace it."
            )
        if existing is not None and mode == "append":
            self._check_schema(existing)

        self.lock = WriteLock(self.storage, ttl=lock_ttl)
        self.lock.acquire(break_lock=break_lock)
        try:
            if mode == "overwrite":
                for d in (DATA_DIR, COMMITS_DIR, STATS_DIR):
                    self.storage.delete_prefix(d)
                self.storage.delete(MANIFEST)
                existing = None
            else:
                existing = self._existing_manifest()  # re-read under the lock
            self._init_manifest(existing, provenance, config)
            self._fold_orphan_commits()
            self._write_manifest()
        except BaseException:
            self.lock.release()
            raise

    # --- opening -------------------------------------------------------------
    def _existing_manifest(self) -> dict | None:
        try:
            return read_manifest(self.storage)
        except DatasetNotFoundError:
            return None

    def _check_schema(self, manifest: dict) -> None:
        old = DatasetSchema.from_json(manifest["schema"])
        if not self._columns_fixed and manifest.get("units"):
            self.schema.columns = dict(old.columns)
            self._columns_fixed = True
        old.check_same(self.schema, self.storage.display())

    def _init_manifest(self, existing: dict | None, provenance: dict | None, config: dict | None) -> None:
        if existing is not None:
            self._check_schema(existing)
            self.manifest = existing
            self.units = {u["id"]: u for u in existing.get("units", [])}
            self._load_stats()
        else:
            self.manifest = {
                "format_version": FORMAT_VERSION,
                "dataset_id": uuid.uuid4().hex,
                "created": now_iso(),
            }
        self.manifest.update({
            "compression": self.compression,
            "row_group_bytes": self.row_group_bytes,
            "checksum_algorithm": "xxh3_128",
            "code_version": code_version(),
        })
        prov = self.manifest.setdefault("provenance", {})
        prov.update(redact(provenance or {}))
        if config is not None:
            self.manifest["config"] = redact(config)

    def _load_stats(self) -> None:
        """Merged stats from stats/<hook>.npz, rebuilt from commit records if they disagree."""
        committed = sorted(self.units)
        for name in self.schema.hooks:
            try:
                stats, units = HookStats.from_npz_bytes(self.storage.get_bytes(f"{STATS_DIR}/{name}.npz"))
            except FileNotFoundError:
                stats, units = None, None
            if units == committed and stats is not None:
                self.stats[name] = stats
        if len(self.stats) < len(self.schema.hooks) and committed:
            log.info("rebuilding merged statistics from %d commit records", len(committed))
            self.stats = {}
            for rec in self._read_records(committed):
                self._merge_record_stats(rec)

    def _read_records(self, unit_ids: list[int]) -> list[dict]:
        from shards.manifest import unit_commit_path

        def one(uid: int) -> dict:
            return json.loads(self.storage.get_bytes(unit_commit_path(uid)))

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, unit_ids))

    def _fold_orphan_commits(self) -> None:
        """Commit records the manifest lacks (a writer died after them) are complete units."""
        ids = [u for u in (parse_unit_name(f) for f in self.storage.list(COMMITS_DIR)) if u is not None]
        orphans = sorted(set(ids) - set(self.units))
        if not orphans:
            return
        folded = 0
        for rec in self._read_records(orphans):
            if not self._columns_fixed and "schema_json" in rec:
                # The dead writer had inferred its metadata columns: adopt them if hooks agree.
                theirs = DatasetSchema.from_json(rec["schema_json"])
                theirs.check_same(self.schema, self.storage.display())
                self.schema.columns = dict(theirs.columns)
                self._columns_fixed = True
            if rec.get("schema") != self.schema.fingerprint():
                log.warning("ignoring commit record of unit %d: written with another schema", rec["id"])
                continue
            self._add_record(rec)
            folded += 1
        if folded:
            log.info("folded %d committed units that the manifest did not list yet", folded)

    # --- committing ------------------------------------------------------------
    def _merge_record_stats(self, rec: dict) -> None:
        for name, sj in rec.get("stats", {}).items():
            s = HookStats.from_json(sj)
            self.stats[name] = self.stats[name].merge(s) if name in self.stats else s

    def _add_record(self, rec: dict) -> None:
        old = self.units.get(rec["id"])
        if old is not None and old.get("checksum") != rec.get("checksum"):
            # A rewrite of a committed unit replaces it: rebuild stats without the old copy.
            self.units[rec["id"]] = self._manifest_entry(rec)
            self.stats = {}
            for r in self._read_records(sorted(self.units)):
                self._merge_record_stats(r)
            return
        if old is None:
            self._merge_record_stats(rec)
        self.units[rec["id"]] = self._manifest_entry(rec)

    @staticmethod
    def _manifest_entry(rec: dict) -> dict:
        keys = ("id", "path", "rows", "bytes", "checksum", "row_groups", "example_range", "committed")
        entry = {k: rec.get(k) for k in keys}
        if rec.get("skipped"):
            entry["skipped"] = rec["skipped"]
        return entry

    def _write_manifest(self) -> None:
        units = [self.units[u] for u in sorted(self.units)]
        self.manifest["schema"] = self.schema.to_json()
        self.manifest["hooks"] = self.manifest["schema"]["hooks"]
        self.manifest["units"] = units
        self.manifest["num_rows"] = sum(u["rows"] for u in units)
        self.manifest["num_bytes"] = sum(u["bytes"] for u in units)
        self.manifest["stats"] = {n: s.summary() for n, s in self.stats.items()}
        self.manifest["updated"] = now_iso()
        ids = sorted(self.units)
        for name, s in self.stats.items():
            self.storage.put_bytes(f"{STATS_DIR}/{name}.npz", s.to_npz_bytes(ids))
        self.storage.put_bytes(MANIFEST, dumps(self.manifest))

    def unit_writer(self) -> UnitWriter:
        """A picklable writer of single units for remote workers (schema must be fixed)."""
        return UnitWriter(self.uri, self.schema.to_json(), self._storage_options, self.compression,
                          self.row_group_bytes, self.compute_stats, self.fsync)

    def write_unit(self, unit_id: int, columns: dict) -> dict:
        """Write and commit one unit; rewriting a unit id replaces it (one copy, never two)."""
        self._check_open()
        if not self._columns_fixed:
            reserved = {"example_id", "position", "token_id", *self.schema.hooks}
            self.schema.columns = {n: infer_column_type(v) for n, v in columns.items() if n not in reserved}
            self._columns_fixed = True
        record = self.unit_writer().write(unit_id, columns)
        self.commit(record)
        return record

    def commit(self, record: dict) -> None:
        """Fold a unit's commit record (from ``write_unit`` or a remote UnitWriter) into the manifest."""
        self._check_open()
        if record.get("schema") != self.schema.fingerprint():
            raise SchemaMismatchError(f"commit record of unit {record.get('id')} was written with another schema")
        self._add_record(record)
        self._write_manifest()

    def is_committed(self, unit_id: int) -> bool:
        return int(unit_id) in self.units

    @property
    def committed_units(self) -> set[int]:
        return set(self.units)

    def set_provenance(self, **fields) -> None:
        """Add provenance fields (model, corpus, …) to the manifest, secrets removed."""
        self.manifest.setdefault("provenance", {}).update(redact(fields))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"writer of {self.storage.display()} is closed")

    def close(self) -> None:
        """Write the final manifest and release the write lock."""
        if self._closed:
            return
        try:
            self._write_manifest()
        finally:
            self._closed = True
            self.lock.release()

    def abort(self) -> None:
        """Release the lock without a final manifest write (committed units stay committed)."""
        if not self._closed:
            self._closed = True
            self.lock.release()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()


__all__ = ["create_dataset", "DatasetWriter", "MODES", "LOCK"]

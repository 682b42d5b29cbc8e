"""Opening a dataset for writing and committing units into its manifest."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Literal

import numpy as np

from shards.card import CARD, write_card
from shards.cleanup import (
    delete_dataset_files,
    modified_time,
    pending_records,
    readable_records,
    record_ids,
    remove_empty_dirs,
)
from shards.codecs import CODECS
from shards.commits import CommitRecord
from shards.errors import (
    ActlakeError,
    CorruptDataError,
    CorruptManifestError,
    DatasetExistsError,
    DatasetNotFoundError,
    JobMismatchError,
    SchemaMismatchError,
    VersionConflictError,
)
from shards.invocation import command_line
from shards.layout import (
    MANIFEST,
    artifact_path,
    check_unit_id,
    record_path,
    unit_commit_path,
    versioned_stats_path,
)
from shards.lock import WriteLock
from shards.manifest import (
    FORMAT_VERSION,
    ArtifactEntry,
    CommitInfo,
    Manifest,
    Provenance,
    TickRecord,
    UnitEntry,
    bytes_digest,
    code_version,
    identity_diff,
    list_versions,
    manifest_of_root,
    now_iso,
    parse_manifest,
    read_manifest,
    roll_forward,
)
from shards.partials import PendingUnit, all_partials, merge
from shards.schema import DatasetSchema, infer_column_type, parse_hooks
from shards.secrets import redact
from shards.stats import HookStats
from shards.stats_files import covers, read_stats_file
from shards.storage import Storage, StorageOptions
from shards.unit_set import UnitSet
from shards.unit_table import IdDigest
from shards.unit_writer import UnitWriter
from shards.versionlog import LogWriter

log = logging.getLogger("actlake.writer")
#: units added after which a version writes statistics files again (between, a version names the units added since
#: the last files, whose own statistics readers merge in: at most this many footers read per version)
STATS_EVERY = 256
Mode = Literal["create", "append", "overwrite"]
MODES = ("create", "append", "overwrite")
COMPRESSIONS = ("none", "lz4", "zstd")


def create_dataset(uri: str, hooks: dict, columns: dict | None = None, mode: Mode = "create",
                   **options) -> DatasetWriter:
    """Open a dataset for writing (see ``DatasetWriter`` for the options).

    Example::

        w = create_dataset("s3://bucket/acts", hooks={"resid.3": {"shape": [384], "dtype": "float16"}})
        w.write_unit(0, {"example_id": ids, "position": pos, "resid.3": acts})
        w.close()
    """
    return DatasetWriter(uri, hooks, columns, mode, **options)


class DatasetWriter:
    """The one writer of a dataset: holds its lock and folds commit records into the manifest.

    ``mode``: ``"create"`` refuses an existing dataset; ``"append"`` opens an existing one with the same
    schema (or creates it) and keeps its committed units, which is how a killed job resumes;
    ``"overwrite"`` deletes what is there first. ``columns`` maps metadata columns to types
    (``{"label": "string"}``); None infers them from the first unit. ``provenance`` (model, corpus, ...)
    and ``config`` (the job configuration; secrets are removed) go into the manifest. ``job_identity``
    holds the settings that make the job: a dataset with committed units refuses to be appended to by
    a job whose identity differs, naming the settings that differ. ``fsync=False`` skips flushing unit
    files to the disk before their commit (local disks only): a killed process still loses nothing, a
    power cut may. ``rebuild_manifest``: a missing or damaged manifest is rebuilt from the commit
    records (the damaged one is kept as ``manifest.json.damaged``); ``actlake verify --repair`` uses it.
    ``allow_nonfinite``: units holding NaN or ±inf activations are written (and counted per hook in the
    statistics) instead of refused with a ``NonFiniteError`` naming the hook.

    Every manifest write that changes the dataset is a new version. Its log entry (``_log/vNNNNNNNNN.json``, created
    only if absent: a writer that finds its number taken stops) is the commit; ``manifest.json`` (the root readers
    start from) follows it, and checkpoints of the unit list come every few dozen versions. What a version writes
    besides (statistics, checkpoints) is named with this writer session's tag, and committed unit files are never
    rewritten, so a reader of an older version keeps reading exactly it (docs/format.md, formats v3 and v4; v2
    datasets' ``_versions/`` manifests are still read). ``commit_interval`` (seconds) folds commit records into the
    manifest at most that often (a unit counts from its commit record on; the manifest catches up at the next write
    and at close), so a long job makes a version every few seconds, not one per unit. ``commit_info`` says what made
    the versions this writer writes (``actlake versions`` shows it).
    """

    def __init__(self, uri: str, hooks: dict, columns: dict | None = None, mode: Mode = "create", *,
                 compression: str = "none", encoding: str = "binary", row_group_bytes: int = 32 << 20,
                 provenance: Provenance | dict | None = None, config: dict | None = None,
                 job_identity: dict | None = None, storage_options: StorageOptions | dict | None = None,
                 compute_stats: bool = True, break_lock: bool = False, lock_ttl: float = 300.0,
                 fsync: bool = True, rebuild_manifest: bool = False, commit_interval: float = 0.0,
                 commit_info: CommitInfo | None = None, allow_nonfinite: bool = False) -> None:
        # Validate everything before touching storage: bad input writes nothing.
        _check_choice("mode", mode, MODES)
        _check_choice("compression", compression, COMPRESSIONS)
        _check_choice("encoding", encoding, tuple(CODECS))
        if row_group_bytes < 1 << 16:
            raise ValueError(f"row_group_bytes={row_group_bytes} is too small; use tens of MB (default 32 MiB)")
        self.schema = DatasetSchema(parse_hooks(hooks, encoding), {n: str(t) for n, t in (columns or {}).items()})
        self.schema.arrow_schema()  # raises on unknown column types
        self._columns_fixed = columns is not None
        self.storage = Storage(uri, storage_options)
        self.storage.require_writable("writing a dataset")
        self.uri = uri
        self.compression, self.row_group_bytes = compression, int(row_group_bytes)
        self.compute_stats, self.fsync = compute_stats, fsync
        self.allow_nonfinite = allow_nonfinite  #: NaN/±inf values are refused per unit unless allowed (then counted)
        self.job_identity = job_identity
        self.units = UnitSet()  #: by id; the opened version's are read only when a question needs them
        self.stats: dict[str, HookStats] = {}  #: the latest version's, exactly (merged as units come)
        self._closed = False
        self._rebuild = rebuild_manifest
        self.created = False  #: this writer made the dataset (there was no manifest and no kept version)
        self.commit_interval = float(commit_interval)
        self.commit_info = commit_info or CommitInfo(operation=mode)
        self._added = self._removed = 0
        self._wrote_version, self._last_write = False, 0.0
        self._written_state: dict | None = None  #: the state fields at the last write (None: must write)
        self._pending_added: dict[int, UnitEntry] = {}  #: units added or replaced since the last version
        self._pending_removed: set[int] = set()  #: units dropped since the last version
        self._superseded: list[str] | None = []  #: files of units removed or replaced since (None: unknown)
        self._ids = IdDigest(content=0)  #: the committed units, summarised (updated per unit: O(1))
        self._stats_ids: IdDigest | None = None  #: the units the statistics files of the last version cover
        #: units added since those files (statistics files are written every ``STATS_EVERY`` units: a version
        #: between names these, whose own statistics readers merge in)
        self._stats_since: dict[int, UnitEntry | PendingUnit] = {}
        self._stats_dirty = False  #: a unit was removed or replaced since the files: the next version writes some
        self._stats_stale = False  #: ``stats`` must be rebuilt from every unit's own before the next version
        # units whose records the version being built names, and those the latest named: kept until the next
        # version, so that a lost or damaged latest log entry can be rebuilt from them (`verify --repair`)
        self._retire, self._retire_prev = set[int](), set[int]()
        self._rows = self._bytes = 0  #: totals of the committed units (updated per unit)
        #: this writer session's tag: every file it writes for a version is named with it (format v4), so files a
        #: stalled writer that lost its lock writes can never replace the ones of the version that counts
        self.tag = uuid.uuid4().hex[:8]
        self.log = LogWriter(self.storage, self.tag)
        self._stats_rebuilt = False  #: damaged or stale statistics files were rebuilt: write new ones
        self._check_existing(self._existing_manifest(mode), mode)
        self.lock = WriteLock(self.storage, ttl=lock_ttl)
        self.lock.acquire(break_lock=break_lock)
        try:
            self._open(mode, _as_provenance(provenance), config)
        except BaseException:
            self.lock.release_quietly()
            raise

    # --- opening -------------------------------------------------------------
    def _existing_manifest(self, mode: str = "append") -> Manifest | None:
        """The dataset's manifest; None when there is none. A damaged one is refused (CorruptManifestError,
        naming `verify --repair`) except by overwrite, which replaces it; a newer format is always refused."""
        try:
            manifest = self._read_root()
        except DatasetNotFoundError:
            return self._from_log("missing")
        except CorruptManifestError:
            if mode == "overwrite" or self._rebuild:
                log.warning("%s is damaged; %s", self.storage.display(MANIFEST),
                            "overwriting the dataset" if mode == "overwrite" else "rebuilding it")
                return self._from_log("damaged")
            raise
        if self._rebuild and hasattr(manifest.units, "loaded"):  # a repair: the unit list must read too
            try:
                manifest.units.loaded()
            except CorruptManifestError as exc:
                log.warning("%s", exc)
                return self._replay(manifest)
        return manifest

    def _from_log(self, problem: str) -> Manifest | None:
        """The latest version from its log entry when the root is ``problem`` (missing, damaged): the log is what
        makes versions (format v4), so a lost root loses nothing. None without a readable log."""
        from shards.versionlog import list_log_versions, log_path, read_log, root_of

        logged = list_log_versions(self.storage)
        if not logged:
            return None
        try:
            root = root_of(self.storage, read_log(self.storage, logged[-1])[0])
            manifest = manifest_of_root(root, self.storage.display(MANIFEST), self.storage, lazy=True)
            manifest.units.loaded()  # its checkpoint and leaves read whole
        except (CorruptManifestError, FileNotFoundError, KeyError, ValueError, TypeError) as exc:
            manifest = self._replay(None) if self._rebuild else None
            if manifest is None:
                # never a new dataset where versions were committed: its units would silently leave the latest
                raise CorruptManifestError(
                    f"{self.storage.display(MANIFEST)} is {problem} and the latest version's log entry "
                    f"{self.storage.display(log_path(logged[-1]))} cannot be read ({exc}). `actlake verify --repair "
                    f"{self.storage.display()}` sets it aside and rebuilds the latest version from the version before "
                    "and the commit records after it.") from None
        if not getattr(self, "_warned_root", False):
            log.warning("%s is %s: continuing from version %d, the latest in the log", self.storage.display(MANIFEST),
                        problem, manifest.version)
            self._warned_root = True
        self._root_lost = manifest.version  # the version the root is rebuilt from; the next one writes it again
        return manifest

    def _read_root(self) -> Manifest:
        """``manifest.json`` parsed, once per distinct content: opening reads it before and after taking the
        lock (a writer may commit in between), and parsing a large dataset's unit list twice cost as much as
        the rest of the open."""
        try:
            raw = self.storage.get_bytes(MANIFEST)
        except FileNotFoundError:
            return read_manifest(self.storage)  # the error that names what to do
        memo = getattr(self, "_root_memo", None)
        if memo is None or memo[0] != raw:
            # lazy: the unit list is read only when a question needs it (``UnitSet``): an append to a million-unit
            # dataset reads its root, not its unit list
            memo = self._root_memo = (raw, parse_manifest(raw, self.storage.display(MANIFEST), self.storage,
                                                          lazy=True))
        return roll_forward(self.storage, memo[1])  # versions committed after the root was written

    def _check_existing(self, existing: Manifest | None, mode: str) -> None:
        """Refuse what would mix or lose data, before the lock is taken and anything is written."""
        if existing is None or mode == "overwrite":
            return
        if mode == "create":
            raise DatasetExistsError(f"a dataset already exists at {self.storage.display()} ({len(existing.units)} "
                                     "committed units). Use mode='append' to resume or add units, or "
                                     "mode='overwrite' to replace it.")
        existing.schema.check_same(self._schema_with_columns_of(existing), self.storage.display())
        if self.job_identity is not None and existing.units and existing.job_identity is not None:
            # stored redacted: compared redacted (a secret-named setting would otherwise always differ, and be shown)
            diffs = identity_diff(existing.job_identity, redact(self.job_identity))
            if diffs:
                raise JobMismatchError(
                    f"{self.storage.display()} holds a dataset made by a different job ({'; '.join(diffs)}). Rerun "
                    "with the same settings to resume it, replace it (mode='overwrite'; --overwrite on the command "
                    "line), or choose another output.")

    def _schema_with_columns_of(self, existing: Manifest) -> DatasetSchema:
        """This writer's schema; metadata columns it would infer are taken from a dataset that has units."""
        if not self._columns_fixed and existing.units:
            return DatasetSchema(self.schema.hooks, dict(existing.schema.columns))
        return self.schema

    @functools.cached_property
    def _kept(self) -> list[int]:
        """Every version record there is (a listing of ``_log/``: O(versions), so read only when no v3+ root says
        where the dataset stands: a new, damaged or v1/v2 dataset; an append opens without it)."""
        return list_versions(self.storage)

    def _open(self, mode: str, provenance: Provenance, config: dict | None) -> None:
        previous = self._existing_manifest(mode)
        #: the next version is the one after the latest (whose log entry is the last that exists: the root may lag).
        #: Without a readable root (an overwrite or a rebuild of a damaged one) or from a v2 dataset (whose killed
        #: writer may have kept a version ahead of its manifest), after every version record there is. A number
        #: taken meanwhile is never written twice: the commit creates the log entry only if absent.
        self._floor = (previous.version if previous is not None and previous.format_version >= 3
                       else max([previous.version if previous else 0, *self._kept]))
        if mode == "overwrite":
            self._start_over(previous)
        existing = self._existing_manifest() if mode != "overwrite" else None  # re-read under the lock
        if (existing is None or getattr(self, "_root_lost", False)) and self._rebuild:
            self._set_aside_damaged_manifest()
        self._check_existing(existing, mode)
        stored_state = _state_key(existing.state_json()) if existing is not None else None  # before this job
        self.manifest = self._adopt(existing) if existing is not None else self._new_manifest()
        self.manifest.compression, self.manifest.row_group_bytes = self.compression, self.row_group_bytes
        self.manifest.code_version = code_version()
        self.manifest.provenance = self.manifest.provenance.updated(provenance)
        if config is not None:
            self.manifest.config = config
            if command_line():  # the command of the job now writing (the card shows it)
                self.manifest.provenance.details["command_line"] = command_line()
        if getattr(self, "_replayed", None) is not None:  # its checkpoint cannot be read: the next version writes one
            self.log.state = {k: v for k, v in existing.state_json().items() if k not in ("version", "updated",
                                                                                        "commit", "previous")}
            self.log.base = self._replayed
        else:
            self.log.adopt(existing.root if existing is not None else None,
                           existing.source_digest if existing is not None else "", existing)
        if existing is not None and not self._stats_rebuilt:
            self._written_state = stored_state
            self._stats_ids = self._ids if existing.stats_files else None
        self.manifest.units = _UnitsView(self)
        if mode == "overwrite":  # "unknown": a dataset whose root could not be read
            self.manifest.replaces = previous.dataset_id if previous is not None else "unknown" if self._kept else ""
        else:
            self._fold_orphan_commits()
        self._write_manifest(force=mode == "overwrite" or getattr(self, "_root_lost", False))
        if mode == "overwrite":
            self._remove_replaced_records()

    def _start_over(self, previous: Manifest | None) -> None:
        """``mode="overwrite"``: the dataset starts again empty. Format v2 keeps every committed file and the old
        versions (a reader of one keeps reading it; ``vacuum`` removes them); only the commit records go, so
        that no unit of the old dataset is folded into the new one. A v1 dataset's files are named by unit id
        and would be rewritten in place: they are deleted, as before."""
        if previous is not None and previous.format_version < 2 and not self._kept:
            delete_dataset_files(self.storage, previous, list(self.schema.hooks))
            return
        # The old commit records go once the new dataset's first version is committed (``_remove_replaced_records``):
        # stopped before, nothing changed; stopped after, they are records of a replaced dataset, never folded
        # (``CommitRecord.belongs_to``) and removed by `verify --repair`.
        self.log.restart()
        self._superseded = None  # every file of the old dataset: its vacuum lists the dataset's files
        if previous is not None:
            self._removed += len(previous.units)
            log.info("overwriting %s: version %d (%d units) stays readable as a version until vacuumed",
                     self.storage.display(), previous.version, len(previous.units))

    def _replay(self, root: Manifest | None) -> Manifest | None:
        """For a repair: the latest version (the root's, else the last in the log) with its unit list rebuilt by
        replaying log entries (``versionlog.replayed_version``), when its checkpoint or a leaf cannot be read.
        The next version writes a checkpoint of every unit. None when it cannot be rebuilt."""
        from shards.versionlog import digest, list_log_versions, read_log, replayed_version

        try:
            version = root.version if root is not None else max(list_log_versions(self.storage))
            entry, raw = read_log(self.storage, version)
            state, units = replayed_version(self.storage, entry, root.state_json() if root is not None else None)
            manifest = Manifest.from_json(state, units)
        except (CorruptManifestError, FileNotFoundError, KeyError, ValueError, TypeError) as exc:
            log.warning("the latest version cannot be rebuilt from the log (%s)", exc)
            return None
        log.warning("rebuilt the unit list of version %d of %s by replaying its log entries", version,
                    self.storage.display())
        self._replayed = (version, digest(raw))
        self._root_lost = version
        return manifest

    def _remove_replaced_records(self) -> None:
        """After an overwrite's first version: the commit records of the dataset it replaced (none is folded)."""
        records, bad = readable_records(self.storage, record_ids(self.storage))
        stale = [record_path(r.id) for r in records if r.dataset_id != self.manifest.dataset_id]
        stale += [unit_commit_path(i) for i in record_ids(self.storage, legacy=True)]  # all of replaced datasets
        self.storage.delete_many([*stale, *bad])  # unreadable ones: of no dataset

    def _set_aside_damaged_manifest(self) -> None:
        """Keep a damaged manifest's bytes as ``manifest.json.damaged`` before a rebuilt one replaces it."""
        try:
            self.storage.put_bytes(f"{MANIFEST}.damaged", self.storage.get_bytes(MANIFEST))
        except FileNotFoundError:
            pass

    def _new_manifest(self) -> Manifest:
        self.created = not self._kept and self._floor == 0
        self.units = UnitSet()
        self._next_example = 0
        return Manifest(dataset_id=uuid.uuid4().hex, schema=self.schema, created=now_iso(),
                        code_version=code_version(), job_identity=self.job_identity)

    def _adopt(self, existing: Manifest) -> Manifest:
        """Continue an existing dataset: its schema (column order), units, statistics and job identity."""
        self.schema = DatasetSchema(existing.schema.hooks, dict(self._schema_with_columns_of(existing).columns))
        self._columns_fixed = self._columns_fixed or bool(existing.units)
        counts = (existing.root or {}).get("units") if isinstance((existing.root or {}).get("units"), dict) else {}
        # format v4 records each version's largest unit id and unit digest: opening reads no unit list
        self.units = UnitSet(existing.units, len(existing.units), counts.get("max_id"))
        digest = counts.get("digest")
        self._ids = (IdDigest.from_hex(len(existing.units), digest) if digest else
                     IdDigest.of_units(self.units.base_table()))
        self._rows, self._bytes = existing.num_rows, existing.num_bytes
        # the first example id no unit has used (format v4 counts record it since 2026-12; older roots: computed
        # from the unit list when a version is written)
        self._next_example = int(counts["next_example"]) if "next_example" in counts else None
        self._stats_since = {int(p[0]): PendingUnit(*p) for p in existing.stats_pending}
        self._load_stats(existing)
        if existing.job_identity is None or not existing.units:
            if existing.units and self.job_identity is not None:
                log.warning("%s predates job identities: recording this job's (%d committed units cannot be "
                            "checked against it)", self.storage.display(), len(existing.units))
            existing.job_identity = self.job_identity
        return existing

    def _load_stats(self, manifest: Manifest) -> None:
        """The latest version's statistics: its statistics files (which must cover exactly the units they say:
        the version's less those added since) with the units added since merged in; rebuilt from every unit's own
        statistics when a file is missing, damaged or stale."""
        covered = self._ids
        for u in self._stats_since.values():  # the files cover the version's units less those added since
            covered = covered.toggled(u.id, added=False, checksum=u.checksum)
        files = {}
        for name in self.schema.hooks:
            try:
                stats, units = read_stats_file(self.storage, name, manifest.stats_files.get(name))
            except FileNotFoundError:
                continue
            except CorruptDataError as exc:
                log.warning("%s", exc)
                continue
            if covers(units, list(self.units) if isinstance(units, list) else None, covered):  # v1/v2: unit ids
                files[name] = stats
        if not len(self.units):  # nothing to describe (files a version with units wrote are not this one's)
            self.stats, self._stats_ids = {}, None
            return
        if len(files) == len(self.schema.hooks):
            try:
                self.stats = merge(files, all_partials(self.storage, self._stats_since.values(), self.schema))
                self._stats_ids = covered if manifest.stats_files else None
                return
            except (ActlakeError, OSError, ValueError, KeyError) as exc:  # a unit file added since is damaged
                log.warning("the statistics of the units added since the last statistics files cannot be read "
                            "(%s): they are rebuilt when the next version is written", exc)
                self._stats_stale = True  # (a repair may drop the damaged unit first: then they need not be read)
                return
        # files missing, damaged or stale: rebuilt from every unit's own when the next version is written, which
        # this writer makes at once
        self._stats_stale = True
        self._stats_rebuilt = True

    def _rebuild_stats(self) -> None:
        """Every hook's statistics from every unit's own (its file's footer; before format v4, its commit
        record), merged, when the next version is written: after a unit is removed or replaced, or when a
        statistics file cannot be used."""
        self._stats_stale = True

    def _fresh_stats(self) -> None:
        if self._stats_stale:
            log.info("rebuilding merged statistics from the statistics of %d units", len(self.units))
            self.stats = merge({}, all_partials(self.storage, self.units.table(), self.schema))
            self._stats_dirty, self._stats_since, self._stats_stale = True, {}, False

    def _fold_orphan_commits(self) -> None:
        """Commit records the manifest lacks (a writer died after them) are complete units.

        Only records named and shaped as the format makes them are folded (``UnitEntry.check``: a path
        derived from the unit id); an unreadable one is left out with a warning, and ``verify`` names it.
        """
        pending = pending_records(self.storage)  # id -> last-modified time (one listing)
        # The latest version's own records are kept until the next version: those written before its log entry
        # (by the store's clock) are not read, and go after this writer's first version. Every other record is
        # read: a unit the manifest names with that very file counts already; another file of a committed id is
        # a rewrite a killed writer committed (its record exists), folded as a new unit is.
        kept = self._kept_records(pending) if pending else set()
        records, bad = readable_records(self.storage, [i for i in pending if i not in kept])
        fresh = []
        for record in records:
            if record.id in self.units and self.units[record.id].path == record.unit.path:
                kept.add(record.id)
            else:
                fresh.append(record)
        self._retire_prev |= kept
        if self.manifest.format_version < 4 or not self.manifest.version:
            # before format v4 every record was kept: fold those of units the manifest lacks (once: the first v4
            # version is written by a writer that did, and v4 writers never write there)
            legacy = [i for i in record_ids(self.storage, legacy=True) if i not in self.units]
            kept, bad_legacy = readable_records(self.storage, legacy, legacy=True)
            fresh += kept
            bad.update(bad_legacy)
        for rel, problem in bad.items():
            log.warning("not folding %s: %s", rel, problem)
        records = sorted(fresh, key=lambda r: r.id)
        folded = 0
        if not self.manifest.version and records:
            # a dataset no version was written of yet (its first writer died, or its root is rebuilt from the
            # records): it is the one most records were written for
            from collections import Counter

            ids = Counter(r.dataset_id for r in records if r.dataset_id)
            if ids:
                self.manifest.dataset_id = ids.most_common(1)[0][0]
        for record in records:
            if not record.belongs_to(self.manifest):
                log.warning("not folding the commit record of unit %d: it belongs to dataset %s, which an overwrite "
                            "replaced", record.id, record.dataset_id or "(before format v4)")
                continue
            if not self._columns_fixed:
                # The dead writer had inferred its metadata columns: adopt them if the hooks agree.
                record.schema.check_same(self.schema, self.storage.display())
                self.schema = DatasetSchema(self.schema.hooks, dict(record.schema.columns))
                self._columns_fixed = True
            if record.schema_fingerprint != self.schema.fingerprint():
                log.warning("ignoring commit record of unit %d: written with another schema", record.id)
                continue
            self._add_record(record)
            folded += 1
        self.folded = folded  #: units folded from a killed writer's records when it opened (`verify --repair` says)
        if folded:
            log.info("folded %d committed units that the manifest did not list yet", folded)

    def _kept_records(self, pending: dict[int, float | None]) -> set[int]:
        """The pending records that are the latest version's own: of a unit its log entry added, and written before
        that entry (last-modified times of the same store; equal or unknown times are read instead)."""
        from shards.versionlog import log_path, read_log

        try:
            entry = read_log(self.storage, self.manifest.version)[0]
            committed_at = modified_time(self.storage.info(log_path(self.manifest.version)))
        except (FileNotFoundError, CorruptManifestError, KeyError, ValueError, TypeError):
            return set()
        if committed_at is None:
            return set()
        added = {int(d["id"]) for d in entry.added}
        return {i for i, t in pending.items() if i in added and t is not None and t < committed_at}

    # --- committing ------------------------------------------------------------
    def _merge_stats(self, record: CommitRecord) -> None:
        for name, s in record.stats.items():
            self.stats[name] = self.stats[name].merge(s) if name in self.stats else s

    def _add_record(self, record: CommitRecord) -> None:
        old = self.units.get(record.id)
        self.units[record.id] = record.unit
        self._pending_added[record.id] = record.unit
        self._pending_removed.discard(record.id)
        if record.unit.example_range is not None and self._next_example is not None:
            self._next_example = max(self._next_example, int(record.unit.example_range[1]) + 1)
        self._rows += record.unit.rows - (old.rows if old else 0)
        self._bytes += record.unit.bytes - (old.bytes if old else 0)
        self._retire.add(record.id)
        if old is None:
            self._ids = self._ids.toggled(record.id, added=True, checksum=record.unit.checksum)
            self._added += 1
            self._merge_stats(record)
            self._stats_since[record.id] = record.unit
        elif old.path != record.unit.path or old.checksum != record.unit.checksum:
            if self._superseded is not None:
                self._superseded.append(old.path)
            # a rewrite of a committed unit replaces it: no trace of the old copy, and the digest of the units the
            # statistics cover changes, so this version writes statistics of its own rows
            self._ids = self._ids.replaced(record.id, old.checksum, record.unit.checksum)
            self._rebuild_stats()

    def _remove(self, uid: int) -> None:
        old = self.units.pop(uid)
        if self._superseded is not None:
            self._superseded.append(old.path)
        self._pending_added.pop(uid, None)
        self._pending_removed.add(uid)
        self._ids = self._ids.toggled(uid, added=False, checksum=old.checksum)
        self._rows, self._bytes = self._rows - old.rows, self._bytes - old.bytes
        self._removed += 1
        self._stats_dirty = True  # the caller rebuilds the statistics (a unit's cannot be taken out exactly)

    def _write_manifest(self, force: bool = False) -> bool:
        """Write a new version if the dataset changed since the last write (or ``force``); whether one was.

        What it writes is proportional to what changed (format v3, ``shards.versionlog``): the statistics files
        when the units changed (each version names its own), the version's log entry, a checkpoint every
        ``CHECKPOINT_EVERY`` versions, and the root."""
        m = self.manifest
        if not (self._pending_added or self._pending_removed or force
                or _state_key(m.state_json()) != self._written_state):
            return False
        self._fresh_stats()
        m.schema, m.stats = self.schema, {n: s.summary() for n, s in self.stats.items()}
        state_key = _state_key(m.state_json())
        if not (self._pending_added or self._pending_removed or force or state_key != self._written_state):
            return False
        self.lock.check()  # a writer that lost its lock stops here, before writing anything of a version
        m.format_version = FORMAT_VERSION  # a v1, v2 or v3 dataset becomes v4 at its first new commit
        m.version = max(m.version, self._floor) + 1
        m.updated = now_iso()
        m.commit = CommitInfo(self.commit_info.operation, self.commit_info.job, self.commit_info.tick,
                              self._added, self._removed)
        saved = (m.stats_files, m.stats_pending, self._stats_ids, dict(self._stats_since), self._stats_dirty)
        self.log.record(self._pending_added, self._pending_removed)
        if not self.stats and m.stats_files and not len(self.units):
            # every unit dropped: this version's statistics are those of no row (files of its own, so that no
            # reader takes an earlier version's for it)
            self.stats = {h: HookStats.empty(int(np.prod(spec.shape))) for h, spec in self.schema.hooks.items()}
            self._stats_dirty = True
        if self._stats_due():
            # statistics files, named by this writer's tag (another writer's for the same version number are never
            # replaced); a reader of an older version gets that version's: the last files on its chain with the
            # units added since merged in
            m.stats_files = {}
            for name, s in self.stats.items():
                m.stats_files[name] = versioned_stats_path(name, m.version, self.tag)
                self.storage.put_bytes(m.stats_files[name], s.to_npz_bytes(self._ids))
            self._stats_ids, self._stats_since, self._stats_dirty = self._ids, {}, False
        m.stats_pending = [(u.id, u.path, u.checksum) for _, u in sorted(self._stats_since.items())]
        counts = {"units": len(self.units), "rows": self._rows, "bytes": self._bytes, "max_id": self.units.max_id,
                  "next_example": self.next_example, "digest": self._ids.to_hex()}
        try:
            data = self.log.write(m.state_json(), self.units, self._pending_added, self._pending_removed, counts,
                                  self._superseded)
        except VersionConflictError:
            m.version = m.version - 1
            m.stats_files, m.stats_pending, self._stats_ids, self._stats_since, self._stats_dirty = saved
            self.lock.lost = self.lock.lost or VersionConflictError(str(sys.exc_info()[1]))
            raise
        self._floor = m.version
        self._retire_records()
        m.source_digest = bytes_digest(data)
        self._written_state = _state_key(m.state_json())
        self._pending_added, self._pending_removed, self._superseded = {}, set(), []
        self._added = self._removed = 0
        self._last_write = time.monotonic()
        self._wrote_version = True  # the card (written at close) describes the latest version
        return True

    def _stats_due(self) -> bool:
        """Whether this version writes statistics files: the first, after a unit was removed or replaced (its
        statistics cannot be taken out exactly), once ``STATS_EVERY`` units were added since the last files, and
        with every checkpoint (so a checkpoint's state names its own: readers merge at most that many units and
        walk back at most to the checkpoint). Otherwise the version names the units added since (O(units added),
        where a file costs O(d) per hook per version: 0.4 GB per hook over a 3,100-version job at d = 4096)."""
        if not self.stats:
            return False
        if self._stats_dirty or set(self.manifest.stats_files) != set(self.stats) or self._stats_ids is None:
            return True
        if self._ids.same(self._stats_ids):
            return False
        return len(self._stats_since) >= STATS_EVERY or self.log.checkpoint_due()

    def _retire_records(self) -> None:
        """Remove the pending records of the units the version before the one just committed named (they count
        through the log now; their statistics stay in their files' footers). The latest version's own records stay
        until the next version: a writer that opens later lists them without reading them, and `verify --repair`
        rebuilds a lost or damaged latest log entry from them."""
        from shards.layout import pending_record_path

        old = self._retire_prev - self._retire  # a record rewritten since (same path) names the new version's unit
        if old:
            self.storage.delete_many([pending_record_path(i) for i in sorted(old)])
        self._retire_prev, self._retire = self._retire, set()

    def checkpoint_now(self) -> None:
        """Write a new version with a checkpoint of every unit (``verify --repair``, after setting aside damaged
        version records: later versions must not need them)."""
        self.log.checkpoint = None
        self.commit_info = CommitInfo("repair", self.commit_info.job, self.commit_info.tick)
        self._write_manifest(force=True)

    def flush(self) -> bool:
        """Write the manifest now if anything was committed since its last write; whether a version was made."""
        self._check_open()
        return self._write_manifest()

    def unit_writer(self, tick: str = "") -> UnitWriter:
        """A picklable writer of single units for remote workers (schema must be fixed); ``tick`` names the
        scheduled tick its units belong to."""
        return UnitWriter(uri=self.uri, schema=self.schema, storage_options=self.storage.storage_options,
                          compression=self.compression, row_group_bytes=self.row_group_bytes,
                          compute_stats=self.compute_stats, fsync=self.fsync, tick=tick,
                          allow_nonfinite=self.allow_nonfinite, dataset_id=self.manifest.dataset_id)

    def write_unit(self, unit_id: int, columns: dict) -> CommitRecord:
        """Write and commit one unit; rewriting a unit id replaces it (one copy, never two)."""
        self._check_open()
        unit_id = check_unit_id(unit_id)  # before anything is written
        if not self._columns_fixed:
            reserved = {*self.schema.column_names, *self.schema.hooks}
            self.schema.columns = {n: infer_column_type(v, n) for n, v in columns.items() if n not in reserved}
            self._columns_fixed = True
        writer = self.unit_writer()
        writer.before_record = self.lock.check  # taken over while it wrote the file: no record, no version
        record = writer.write(unit_id, columns)
        self.commit(record)
        return record

    def commit(self, record: CommitRecord) -> None:
        """Fold a unit's commit record (from ``write_unit`` or a remote UnitWriter) into the manifest."""
        self._check_open()
        if record.schema_fingerprint != self.schema.fingerprint():
            raise SchemaMismatchError(f"commit record of unit {record.id} was written with another schema")
        self._add_record(record)
        if time.monotonic() - self._last_write >= self.commit_interval:
            self._write_manifest()

    def drop_units(self, unit_ids: list[int]) -> None:
        """Uncommit units (damaged ones, say) so that a rerun of the job writes them again.

        The commit record goes first, then the manifest without the unit. Its data file stays: older versions
        name it (``vacuum`` removes it once no kept version does)."""
        self._check_open()
        dropped = sorted({check_unit_id(u) for u in unit_ids} & set(self.units))
        if not dropped:
            return
        for uid in dropped:
            self.storage.delete(unit_commit_path(uid))
            self.storage.delete(record_path(uid))
            self._remove(uid)
            log.warning("dropped unit %d from %s", uid, self.storage.display())
        self._rebuild_stats()
        made_by, self.commit_info = self.commit_info, dataclasses.replace(self.commit_info, operation="drop")
        try:  # a version of its own, listed as a drop (`verify` then knows older versions name the dropped files)
            self._write_manifest()
        finally:
            self.commit_info = made_by

    @property
    def ticks(self) -> list[TickRecord]:
        """The scheduled ticks the dataset records (``actlake schedule``), oldest first."""
        return list(self.manifest.ticks)

    def plan_tick(self, record: TickRecord) -> None:
        """Record a tick's plan and commit it at once: durable before any of its units is written, so a killed
        tick is finished by the next one, never planned again."""
        self._check_open()
        if any(t.tick == record.tick for t in self.manifest.ticks):
            raise ValueError(f"tick {record.tick} is already recorded in {self.storage.display()}")
        self.manifest.ticks.append(record)
        self._write_manifest()

    def abandon_tick(self, tick: str) -> None:
        """Mark an unfinished tick abandoned (its units dropped by the caller): its inputs count as never
        extracted, its unit and example ids are never used again."""
        self._check_open()
        self.manifest.ticks = [dataclasses.replace(t, status="abandoned", finished=now_iso()) if t.tick == tick else t
                               for t in self.manifest.ticks]

    def finish_tick(self, tick: str) -> None:
        """Mark a planned tick done (written with the next commit, ``close`` at the latest)."""
        self._check_open()
        if not any(t.tick == tick for t in self.manifest.ticks):
            raise ValueError(f"no tick {tick} in {self.storage.display()}")
        self.manifest.ticks = [dataclasses.replace(t, status="done", finished=now_iso()) if t.tick == tick else t
                               for t in self.manifest.ticks]

    @property
    def next_example(self) -> int:
        """The first example id no unit of the dataset has used (never lowered by a drop: a scheduled tick's ids
        continue after it). Read from the version's counts; a dataset written before they held it reads its unit
        list once."""
        if self._next_example is None:
            import pyarrow.compute as pc

            top = pc.max(self.units.table().table.column("example_stop")).as_py()
            self._next_example = 0 if top is None else int(top) + 1
        return self._next_example

    def is_committed(self, unit_id: int) -> bool:
        return int(unit_id) in self.units

    @property
    def committed_units(self) -> set[int]:
        return set(self.units)

    def put_artifact(self, name: str, data: bytes, kind: str = "") -> ArtifactEntry:
        """Store ``data`` as ``artifacts/<name>`` with the dataset, checksummed in the manifest (from the next
        manifest write on). The same bytes again write nothing."""
        self._check_open()
        from shards.checksums import checksum

        entry = ArtifactEntry(artifact_path(name), len(data), checksum(data), kind)
        if self.manifest.artifacts.get(name) != entry or not self.storage.exists(entry.path):
            self.storage.put_bytes(entry.path, data)
            self.manifest.artifacts[name] = entry
        return entry

    def set_provenance(self, provenance: Provenance | dict) -> None:
        """Add provenance (model, sections such as corpus) to the manifest; written with the next commit."""
        self.manifest.provenance = self.manifest.provenance.updated(_as_provenance(provenance))

    def _check_open(self) -> None:
        if self.lock.lost is not None:  # taken over: it commits nothing more, whatever it is asked
            raise self.lock.lost
        if self._closed:
            raise RuntimeError(f"writer of {self.storage.display()} is closed")

    def close(self) -> None:
        """Write the final manifest and the dataset card (``README.md``), and release the write lock."""
        if self._closed:
            return
        if self.lock.lost is not None:  # it stopped committing when it lost the lock: say so again
            self._closed = True
            self.lock.release_quietly()
            raise self.lock.lost
        try:
            wrote = self._write_manifest()
            # A writer taken over while paused must not describe its own (older) version in the successor's
            # card, nor report success: the check reads the lock itself, not the heartbeat thread's verdict.
            self.lock.check()
            if wrote or self._wrote_version or not self.storage.exists(CARD):
                self._write_card()
        except BaseException:
            self._closed = True
            self.lock.release_quietly()  # the manifest write's error is the one to report
            raise
        self._closed = True
        self.lock.release()

    def _write_card(self) -> None:
        """The card is derived data (``actlake card`` writes it again): a failure to write it is logged, never
        raised over a committed version."""
        try:
            write_card(self.storage, self.manifest)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("could not write the dataset card %s: %s", self.storage.display(CARD), exc)

    def abort(self, remove_if_empty: bool = False, remove_created: bool = False) -> None:
        """Release the lock without a final manifest write (committed units stay committed).

        Called while an error is on its way up: a failure to release is logged, never raised over it.
        ``remove_if_empty``: a dataset this writer created and committed nothing to is removed, so that a
        failed job leaves no empty dataset behind; ``remove_created``: a dataset this writer created is removed
        whatever it committed (an all-or-nothing job such as an import)."""
        if self._closed:
            return
        self._closed = True
        remove = self.created and (remove_created or (remove_if_empty and not self.units))
        try:
            if remove:
                delete_dataset_files(self.storage, self.manifest, list(self.schema.hooks))
        except Exception as exc:  # noqa: BLE001 - the job's own error is the one to report
            log.warning("could not remove the dataset at %s: %s", self.storage.display(), exc)
            remove = False
        self.lock.release_quietly()
        if remove:
            remove_empty_dirs(self.storage)  # after the lock is gone: folders this writer made, if now empty

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()


def _state_key(state: dict) -> str:
    """A version's state less what every write changes (time, version, commit, code version): equal keys, no
    change worth a version. Small: the unit list is not in it."""
    d = {k: v for k, v in state.items()
         if k not in ("updated", "version", "commit", "code_version", "stats_files", "format_version", "previous")}
    return json.dumps(d, sort_keys=True, default=str)


class _UnitsView(Sequence):
    """The writer's units in id order, as ``manifest.units`` shows them: its count and totals from the writer's
    running sums, the entries (sorted) read only when iterated."""

    def __init__(self, writer: DatasetWriter) -> None:
        self._writer = writer

    def _sorted(self):
        return self._writer.units.table()

    def __len__(self) -> int:
        return len(self._writer.units)

    @property
    def total_rows(self) -> int:
        return self._writer._rows

    @property
    def total_bytes(self) -> int:
        return self._writer._bytes

    def __getitem__(self, i):
        return self._sorted()[i]

    def __iter__(self):
        return iter(self._sorted())


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; use one of {choices}")


def _as_provenance(provenance: Provenance | dict | None) -> Provenance:
    if isinstance(provenance, Provenance):
        return provenance
    return Provenance.from_json(provenance)


__all__ = ["COMPRESSIONS", "MODES", "DatasetWriter", "create_dataset"]

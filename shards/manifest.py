"""The manifest (``manifest.json``), the single commit point of a dataset: its typed form, read and written here.

Everything else in actlake reaches the manifest through these dataclasses; the JSON they write is the format
``FORMAT_VERSION`` names (docs/format.md): the root ``manifest.json`` of the latest version, whose history and
unit list ``shards.versionlog`` keeps (log entries, checkpoints, leaves). Datasets of older formats (v1's single
manifest, v2's whole manifest per version under ``_versions/``) are read as they are and are written in the
current format from their next commit on.
"""

from __future__ import annotations

import json
import numbers
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from shards.errors import ActlakeError, ConfigError, CorruptManifestError, DatasetNotFoundError, FormatVersionError
from shards.layout import (
    COMMITS_DIR,
    LOG_DIR,
    MANIFEST,
    PENDING_DIR,
    VERSIONS_DIR,
    artifact_path,
    parse_version_name,
    version_path,
)
from shards.records import JsonRecord, json_object
from shards.schema import DatasetSchema, HookSpec
from shards.secrets import redact, redact_uri
from shards.stats import StatsSummary
from shards.storage import Storage
from shards.units import SkippedInput, UnitEntry, units_digest

FORMAT_VERSION = 4
#: formats this actlake reads (v1: one mutable file per unit, no kept versions; v2: every version a full copy;
#: v3: a log entry per version; v4: the log entry is the commit, created only if absent, and what a version
#: writes besides it is named by its writer session)
READABLE_FORMATS = (1, 2, 3, 4)
CHECKSUM_ALGORITHM = "xxh3_128"


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("actlake")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class ArtifactEntry(JsonRecord):
    """A file stored with the dataset besides its units (e.g. the model's unembedding for the logit lens)."""

    path: str  #: under the dataset root, ``artifacts/<name>``
    bytes: int
    checksum: str
    kind: str = ""  #: what it holds, e.g. ``unembed``


@dataclass(frozen=True, kw_only=True)
class ModelInfo(JsonRecord):
    """The model that made a dataset, as its manifest records it."""

    name: str
    path: str = ""
    dtype: str = ""
    device: str = "cpu"
    parameters: int = 0
    architecture: str = ""
    revision: str | None = None
    max_positions: int | None = None


@dataclass(frozen=True)
class DatasetRef:
    """A dataset something was computed from: where it was, which dataset, which version, which hooks."""

    uri: str
    dataset_id: str
    version: int
    hooks: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {**asdict(self), "uri": redact_uri(self.uri), "hooks": list(self.hooks)}

    @classmethod
    def from_json(cls, d: dict) -> DatasetRef:
        return cls(uri=d["uri"], dataset_id=d["dataset_id"], version=int(d.get("version", 0)),
                   hooks=tuple(d.get("hooks") or ()))


@dataclass
class Provenance:
    """Where a dataset came from. ``model`` and ``derived_from`` are read by other parts (typed);
    ``details`` holds descriptive sections (corpus, tokenizer, images, pooling, ...) shown by ``actlake info``."""

    model: ModelInfo | None = None
    derived_from: DatasetRef | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        if self.model is not None:
            out["model"] = self.model.to_json()
        if self.derived_from is not None:
            out["derived_from"] = self.derived_from.to_json()
        return {**out, **redact(self.details)}

    @classmethod
    def from_json(cls, d: dict | None) -> Provenance:
        d = dict(d or {})
        model, derived = d.pop("model", None), d.pop("derived_from", None)
        return cls(model=ModelInfo.from_json(model) if isinstance(model, dict) else None,
                   derived_from=DatasetRef.from_json(derived) if derived else None, details=d)

    def updated(self, other: Provenance | None) -> Provenance:
        """This provenance with ``other``'s fields laid over it."""
        if other is None:
            return self
        return Provenance(other.model or self.model, other.derived_from or self.derived_from,
                          {**self.details, **other.details})


@dataclass(frozen=True)
class CommitInfo(JsonRecord):
    """What made a version: ``actlake versions`` lists it."""

    operation: str = ""  #: create, append, overwrite, extract, tick, repair, drop
    job: str = ""  #: the command or schedule, e.g. ``extract`` or ``schedule nightly``
    tick: str = ""  #: the tick id, for versions a scheduled tick made
    units_added: int = 0
    units_removed: int = 0


@dataclass(frozen=True)
class InputRecord(JsonRecord):
    """One input a tick covered: a file (or a growing table's new rows) and the example ids it became."""

    path: str  #: the file's URI, credentials removed
    size: int
    etag: str  #: the store's ETag, or the modification time where there is none
    fingerprint: str  #: xxh3 of the size and the first and last 64 KiB (files) or of the covered rows (tables)
    examples: tuple[int, int]  #: example ids [start, stop)
    rows: tuple[int, int] | None = None  #: a growing table's rows [start, stop); None for whole files

    def to_json(self) -> dict:
        # written out, not dataclasses.asdict (a deep copy): every commit writes every tick's inputs into the root,
        # and asdict made that 96 ms per commit at 1,465 ticks
        return {"path": self.path, "size": self.size, "etag": self.etag, "fingerprint": self.fingerprint,
                "examples": list(self.examples), "rows": list(self.rows) if self.rows else None}

    @classmethod
    def from_json(cls, d: dict) -> InputRecord:
        return cls(path=d["path"], size=int(d["size"]), etag=str(d["etag"]), fingerprint=str(d["fingerprint"]),
                   examples=(int(d["examples"][0]), int(d["examples"][1])),
                   rows=(int(d["rows"][0]), int(d["rows"][1])) if d.get("rows") else None)


@dataclass(frozen=True, kw_only=True)
class TickRecord:
    """One tick of scheduled extraction as the manifest records it: planned (inputs and the unit and example ids
    they get, made durable before any unit is written, so that a killed tick is finished, not planned again),
    then done."""

    tick: str
    schedule: str
    status: str  #: planned | done
    planned: str  #: time (ISO, UTC)
    inputs: tuple[InputRecord, ...]
    units: tuple[int, int]  #: unit ids [start, stop)
    examples: tuple[int, int]  #: example ids [start, stop)
    finished: str = ""
    changed: tuple[str, ...] = ()  #: inputs seen changed after they were extracted (reported, per --on-changed)

    def to_json(self) -> dict:
        return {"tick": self.tick, "schedule": self.schedule, "status": self.status, "planned": self.planned,
                "finished": self.finished, "units": list(self.units), "examples": list(self.examples),
                "inputs": [i.to_json() for i in self.inputs], "changed": list(self.changed)}

    @classmethod
    def from_json(cls, d: dict) -> TickRecord:
        return cls(tick=d["tick"], schedule=d.get("schedule", ""), status=d["status"], planned=d.get("planned", ""),
                   inputs=tuple(InputRecord.from_json(i) for i in d.get("inputs", [])),
                   units=(int(d["units"][0]), int(d["units"][1])),
                   examples=(int(d["examples"][0]), int(d["examples"][1])), finished=d.get("finished", ""),
                   changed=tuple(d.get("changed") or ()))


def identity_diff(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every setting that differs (compared as parsed JSON values)."""
    canon = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731 - tuples equal lists
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if canon(old.get(k)) != canon(new.get(k))]


@dataclass
class Manifest:
    """A dataset's committed state: schema, units, statistics, provenance, the job that made it."""

    dataset_id: str
    schema: DatasetSchema
    created: str
    code_version: str
    compression: str = "none"
    row_group_bytes: int = 32 << 20
    checksum_algorithm: str = CHECKSUM_ALGORITHM
    units: list[UnitEntry] = field(default_factory=list)  #: sorted by unit id
    stats: dict[str, StatsSummary] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    config: dict | None = None  #: the job configuration, secrets removed
    job_identity: dict | None = None  #: the settings that make the job; another job may not append
    artifacts: dict[str, ArtifactEntry] = field(default_factory=dict)  #: name -> file stored with the dataset
    version: int = 0  #: bumped by every manifest write
    updated: str = ""
    format_version: int = FORMAT_VERSION
    stats_files: dict[str, str] = field(default_factory=dict)  #: hook -> the statistics file this version starts from
    #: format v4: units added since that file was written, as (id, path, checksum): this version's statistics are
    #: the file's with these units' own (their footers') merged in (statistics files are written every few hundred
    #: units, not per version)
    stats_pending: list[tuple[int, str, str]] = field(default_factory=list)
    commit: CommitInfo = field(default_factory=CommitInfo)  #: what made this version
    ticks: list[TickRecord] = field(default_factory=list)  #: scheduled extraction: what each tick covered
    #: the digest of the previous version's manifest bytes: each version chained to the one before, so that
    #: `verify` catches an old version rewritten consistently (its own units_digest recomputed)
    previous_digest: str = ""
    previous_version: int = 0  #: the version ``previous_digest`` is of (usually this one minus 1)
    #: the dataset an overwrite replaced with this one ("" otherwise): commit records of that dataset, or written
    #: before records named their dataset, are never folded into this one
    replaces: str = ""
    #: the digest of the bytes this manifest was read from (not stored; "" for one built in memory)
    source_digest: str = field(default="", compare=False, repr=False)
    #: the JSON this manifest was read from (a v3 writer continues from its checkpoint and chain)
    root: dict | None = field(default=None, compare=False, repr=False)

    @property
    def hooks(self) -> dict[str, HookSpec]:
        return self.schema.hooks

    @property
    def num_rows(self) -> int:
        total = getattr(self.units, "total_rows", None)  # a UnitTable sums a column
        return int(total) if total is not None else sum(u.rows for u in self.units)

    @property
    def num_bytes(self) -> int:
        total = getattr(self.units, "total_bytes", None)
        return int(total) if total is not None else sum(u.bytes for u in self.units)

    @property
    def model(self) -> ModelInfo | None:
        return self.provenance.model

    def skipped_inputs(self) -> list[SkippedInput]:
        return [s for u in self.units for s in u.skipped]

    def ref(self, uri: str, hooks=()) -> DatasetRef:
        return DatasetRef(uri, self.dataset_id, self.version, tuple(hooks))

    def to_json(self) -> dict:
        """The whole manifest as format v2 wrote it (the unit list inline): what ``actlake info --json`` shows."""
        state = self.state_json()
        units = [u.to_json() for u in self.units]
        return {**state, "hooks": state["schema"]["hooks"], "units": units, "num_rows": self.num_rows,
                "num_bytes": self.num_bytes, "units_digest": units_digest(units)}

    def state_json(self) -> dict:
        """Every field but the unit list: what a v3 version records (its changes in a log entry, all of it in a
        checkpoint and the root)."""
        out = {"format_version": self.format_version, "dataset_id": self.dataset_id, "version": self.version,
               "created": self.created, "updated": self.updated, "code_version": self.code_version,
               "compression": self.compression, "row_group_bytes": self.row_group_bytes,
               "checksum_algorithm": self.checksum_algorithm, "schema": self.schema.to_json(),
               "stats": {n: s.to_json() for n, s in self.stats.items()}, "provenance": self.provenance.to_json()}
        if self.artifacts:
            out["artifacts"] = {n: a.to_json() for n, a in self.artifacts.items()}
        if self.stats_files:
            out["stats_files"] = dict(self.stats_files)
        if self.stats_pending:
            out["stats_pending"] = [list(p) for p in self.stats_pending]
        out["commit"] = self.commit.to_json()
        if self.ticks:
            out["ticks"] = [t.to_json() for t in self.ticks]
        if self.previous_digest:
            out["previous"] = {"version": self.previous_version, "digest": self.previous_digest}
        if self.replaces:
            out["replaces"] = self.replaces
        if self.job_identity is not None:
            out["job"] = redact(self.job_identity)
        if self.config is not None:
            out["config"] = redact(self.config)
        return out

    def dumps(self) -> bytes:
        """Strict JSON (no NaN or Infinity, which other languages' parsers refuse): non-finite statistics are
        null (``StatsSummary``); anything else non-finite is a bug, raised here before it is written."""
        return (json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, d: dict, units=None) -> Manifest:
        """Parse and check a manifest (see ``check_units``); KeyError/ValueError/TypeError when malformed.
        ``units``: the unit list when the JSON does not hold it inline (a v3 root or log state: a UnitTable)."""
        if units is None:
            check_units(d)
            units = sorted((UnitEntry.from_json(u) for u in d.get("units", [])), key=lambda u: u.id)
        else:
            units.check()
        return cls(
            dataset_id=d["dataset_id"], schema=DatasetSchema.from_json(d["schema"]), created=d.get("created", ""),
            code_version=d.get("code_version", ""), compression=d.get("compression", "none"),
            row_group_bytes=int(d.get("row_group_bytes", 32 << 20)),
            checksum_algorithm=d.get("checksum_algorithm", CHECKSUM_ALGORITHM),
            units=units,
            stats={n: StatsSummary.from_json(s) for n, s in (d.get("stats") or {}).items()},
            provenance=Provenance.from_json(d.get("provenance")), config=d.get("config"),
            job_identity=d.get("job"), version=int(d.get("version", 0)),
            artifacts={n: _artifact(n, a) for n, a in (d.get("artifacts") or {}).items()}, updated=d.get("updated", ""),
            format_version=int(d["format_version"]),
            stats_files={h: _stats_file(h, p) for h, p in (d.get("stats_files") or {}).items()},
            stats_pending=[_pending_unit(p) for p in d.get("stats_pending") or ()],
            commit=CommitInfo.from_json(d.get("commit") or {}),
            ticks=[TickRecord.from_json(t) for t in d.get("ticks") or ()],
            previous_digest=str((d.get("previous") or {}).get("digest") or ""),
            previous_version=int((d.get("previous") or {}).get("version") or 0),
            replaces=str(d.get("replaces") or ""))


def _stats_file(hook: str, path: str) -> str:
    from shards.layout import is_versioned_stats_path, versioned_stats_path

    if not is_versioned_stats_path(hook, path):  # a damaged record cannot point outside the dataset's stats
        raise ValueError(f"stats file of {hook!r} is {path!r}, expected {versioned_stats_path(hook, 1)!r}-like")
    return path


def _pending_unit(p) -> tuple[int, str, str]:
    """One unit of ``stats_pending``: its id, its file (the path its id names) and its checksum."""
    from shards.layout import check_unit_id, is_unit_data_path

    uid, path, checksum = int(p[0]), str(p[1]), str(p[2])
    if not is_unit_data_path(check_unit_id(uid), path):  # a damaged record cannot point outside the dataset
        raise ValueError(f"stats_pending names {path!r} for unit {uid}")
    return uid, path, checksum


def _artifact(name: str, d: dict) -> ArtifactEntry:
    entry = ArtifactEntry.from_json(d)
    if entry.path != artifact_path(name):  # a damaged record cannot point outside the dataset
        raise ValueError(f"artifact {name!r} has path {entry.path!r}, expected {artifact_path(name)!r}")
    return entry


def bytes_digest(data: bytes) -> str:
    """The digest a version records of its predecessor's manifest bytes."""
    import xxhash

    return xxhash.xxh3_128_hexdigest(data)


def check_units(d: dict) -> None:
    """Refuse a unit list that would read rows twice or drop some: repeated ids, an edited list."""
    units = d.get("units", [])
    counts = Counter(u.get("id") for u in units)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        raise ValueError(f"units {repeated} are listed more than once")
    digest = d.get("units_digest")  # absent in datasets written before it was added
    if digest is not None and digest != units_digest(units):
        raise ValueError("its unit list does not match units_digest (the units were edited or damaged)")
    if "num_rows" in d and int(d["num_rows"]) != sum(int(u.get("rows", 0)) for u in units):
        raise ValueError(f"num_rows {d['num_rows']} != the sum of its units' rows")


def parse_manifest(raw: bytes, where: str, storage: Storage | None = None, lazy: bool = False) -> Manifest:
    """A manifest from its bytes; CorruptManifestError or FormatVersionError naming ``where`` and the fix. A v3
    root that names its unit list elsewhere (a checkpoint and log entries) reads it from ``storage`` (``lazy``:
    when first used, see ``LazyUnitTable``)."""
    fix = ("Run `actlake verify --repair URI` to rebuild it from the commit records, or restore it from a copy.")
    data = json_object(raw, where, "a manifest object", fix)
    manifest = manifest_of_root(data, where, storage, lazy)
    manifest.source_digest = bytes_digest(raw)
    return manifest


def manifest_of_root(data: dict, where: str, storage: Storage | None = None, lazy: bool = False) -> Manifest:
    """A manifest from a parsed root (or a v1/v2 manifest object): see ``parse_manifest``."""
    fix = ("Run `actlake verify --repair URI` to rebuild it from the commit records, or restore it from a copy.")
    version = data.get("format_version")
    if version not in READABLE_FORMATS:
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise FormatVersionError(f"{where} has format_version {version}; this actlake reads and writes version "
                                     f"{FORMAT_VERSION}. Upgrade actlake (nothing was read or written).")
        raise CorruptManifestError(f"{where} has format_version {version!r}, expected {FORMAT_VERSION}. {fix}")
    try:
        units = None
        if isinstance(data.get("units"), dict):  # v3: the unit list is in a checkpoint and the log
            from shards.versionlog import root_units

            if storage is None:
                raise ValueError("its unit list is stored beside it: read it with read_manifest(storage)")
            units = root_units(storage, data["units"], lazy)
        manifest = Manifest.from_json(data, units)
        manifest.root = data
        return manifest
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CorruptManifestError(f"{where} is damaged: {detail}. {fix}") from None


def list_versions(storage: Storage) -> list[int]:
    """The kept versions, oldest first: log entries (format v3) and full manifests under ``_versions/`` (v2)."""
    from shards.versionlog import list_log_versions

    v2 = {v for v in (parse_version_name(f) for f in storage.list(VERSIONS_DIR)) if v is not None}
    return sorted(v2 | set(list_log_versions(storage)))


def read_manifest(storage: Storage, version: int | None = None, lazy: bool = False, roll: bool = True) -> Manifest:
    """Load and check ``manifest.json`` (the latest version) or the kept manifest of ``version``; a clear error
    when there is none. ``lazy``: a v3 root's unit list is read when first used (readers: ``open_dataset``).
    ``roll=False``: the version the root names, without the versions committed after it (``roll_forward``)."""
    if version is not None:
        return _read_version(storage, check_version(version))
    try:
        raw = storage.get_bytes(MANIFEST)
    except FileNotFoundError:
        hint = ""
        if not storage.read_only and storage.list(LOG_DIR):
            hint = (" Its log holds versions: `actlake verify --repair` rebuilds manifest.json from them (or reopen "
                    "it with create_dataset(..., mode='append')).")
        elif not storage.read_only and (storage.list(PENDING_DIR) or storage.list(COMMITS_DIR)):
            hint = (" Commit records exist: a writer died before its first manifest; reopen it with "
                    "create_dataset(..., mode='append') or run `actlake verify --repair` to fold them in.")
        raise DatasetNotFoundError(
            f"no actlake dataset at {storage.display()}: {MANIFEST} not found.{hint} "
            "Check the URI (datasets under a prefix: `actlake ls PREFIX`)."
        ) from None
    manifest = parse_manifest(raw, storage.display(MANIFEST), storage, lazy)
    return roll_forward(storage, manifest, lazy) if roll else manifest


def roll_forward(storage: Storage, manifest: Manifest, lazy: bool = False) -> Manifest:
    """The latest version, from ``manifest`` (read from the root): the root names the version that was the latest
    when it was written; versions committed after it (their log entries, the commit point since format v4) are
    applied. One request finds none when the root is current."""
    from shards.versionlog import rolled_forward

    where = storage.display(MANIFEST)
    try:
        root = rolled_forward(storage, manifest.root or {})
    except (KeyError, ValueError, TypeError) as exc:
        raise CorruptManifestError(f"{where}: the versions after it cannot be read ({exc}). Run `actlake verify "
                                   "--repair URI`.") from None
    if root is None:
        return manifest
    return manifest_of_root(root, where, storage, lazy)


def check_version(version) -> int:
    """``version`` as a version number: a whole number >= 0. ``"2"``, ``2.5`` or ``True`` are refused (each would
    otherwise read version 2 or 1 without saying so)."""
    if isinstance(version, bool) or not isinstance(version, numbers.Integral):
        raise ConfigError(f"version {version!r} ({type(version).__name__}): a dataset version is a whole number "
                          "such as 3 (`actlake versions URI` lists them)")
    if version < 0:
        raise ConfigError(f"version {version}: versions count from 0 (`actlake versions URI` lists them)")
    return int(version)


def _missing_version(storage: Storage, version: int, latest: Manifest) -> ActlakeError:
    """Why ``version`` cannot be read: vacuumed (older than what is kept), or not written yet."""
    kept = list_versions(storage)
    if not kept:
        return DatasetNotFoundError(f"{storage.display()} has no version {version}: it keeps no older versions "
                                    f"(written before format v2); only version {latest.version} can be read")
    shown = f"{kept[0]}..{kept[-1]} ({len(kept)})" if len(kept) > 1 else str(kept[0])
    if version > latest.version:
        return DatasetNotFoundError(f"{storage.display()} has no version {version}: versions kept: {shown}, latest "
                                    f"{latest.version}; version {version} is not written yet")
    if kept[0] < version:  # inside the kept range: never committed, or its record is gone
        from shards.versionlog import read_log

        later = min(v for v in kept if v > version)
        try:
            base = read_log(storage, later)[0].base
        except (FileNotFoundError, CorruptManifestError):
            base = version
        if base < version:  # a writer stopped before committing it (format v3 then skipped its number)
            return DatasetNotFoundError(f"{storage.display()} has no version {version}: it was never committed "
                                        f"(version {later} follows version {base}); versions kept: {shown}")
        return CorruptManifestError(
            f"{storage.display()}: the record of version {version} is missing (deleted or lost) although versions "
            f"before and after it are kept (version {later} follows it); it can no longer be read. `actlake verify` "
            "reports it; restore the file from a copy, or `actlake vacuum --keep N` to drop the versions before it.")
    return DatasetNotFoundError(f"{storage.display()}: version {version} was vacuumed (kept: {shown}, latest "
                                f"{latest.version}). `actlake versions {storage.display()}` lists the versions kept; "
                                "`actlake vacuum --keep N` sets how many are kept.")


def _read_version(storage: Storage, version: int) -> Manifest:
    from shards.versionlog import log_path, version_state

    try:
        state, units, entry = version_state(storage, version)  # format v3: its checkpoint and log entries
        try:
            manifest = Manifest.from_json(state, units)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise CorruptManifestError(f"{storage.display(log_path(version))}: version {version} cannot be "
                                       f"rebuilt: {exc}") from None
        return manifest
    except FileNotFoundError:
        pass
    try:
        raw = storage.get_bytes(version_path(version))
    except FileNotFoundError:
        latest = read_manifest(storage)
        if latest.version == version:  # a v1 dataset keeps only its latest version, in manifest.json
            return latest
        raise _missing_version(storage, version, latest) from None
    manifest = parse_manifest(raw, storage.display(version_path(version)), storage)
    if manifest.version != version:
        raise CorruptManifestError(f"{storage.display(version_path(version))} holds version {manifest.version}")
    return manifest



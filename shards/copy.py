"""Copying a dataset (one version, some hooks, some rows) to another place, every byte checked on the way.

Each committed unit of the source version is read whole (one GET), checked against the checksum its manifest
records (a mismatch is the same ``CorruptDataError`` a reader raises) and written to the destination under the
same unit id: as the same bytes when the copy keeps every column and row of it, else re-encoded from the
selected columns and rows. The destination is an ordinary dataset whose writer folds the units' commit records,
so a copy killed anywhere is resumed by running it again: units already committed there are skipped, each row
lands exactly once, and the settings of the copy (its ``job_identity``) must be the same. A copy is pinned to the
source version it was planned on: rerun after the source grew, it resumes on that version (``--version N`` of
another one is refused unless ``--overwrite``). Its provenance names the source (``derived_from``: URI without
credentials, dataset id, version, hooks) and the filters. A destination that is the source under another
spelling, lies inside it, holds it or lies inside another dataset is refused before anything is read or written
(``shards.locations`` compares resolved locations, not strings).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.checksums import checksum
from shards.columns import EXAMPLE_ID
from shards.errors import ConfigError, CorruptDataError, DatasetNotFoundError, StorageError
from shards.manifest import DatasetRef, Manifest, Provenance, UnitEntry
from shards.records import JsonRecord
from shards.secrets import redact_uri
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.copy")
#: commit records are folded into a new version at most this often (each unit is safe once its record exists;
#: a version per unit would write the log, statistics and root once per unit)
COMMIT_INTERVAL_S = 10.0
#: an unchanged unit at least this big takes its statistics from its commit record (one small GET) instead of
#: decoding its hooks; below it, decoding costs less than the request (bench_sharing.py --copy-units)
RECORD_STATS_FROM = 1 << 20


def parse_range(text: str, what: str) -> tuple[int, int] | None:
    """``"A:B"`` (B exclusive; either side may be left out) -> (A, B); '' -> None (no filter)."""
    if not text:
        return None
    a, sep, b = text.partition(":")
    try:
        lo, hi = (int(a) if a else 0), (int(b) if b else np.iinfo(np.int64).max)
    except ValueError:
        lo = hi = -1
    if not sep or lo < 0 or hi <= lo:
        raise ConfigError(f"--{what} {text!r}: give START:STOP with 0 <= START < STOP (STOP exclusive; either may "
                          f"be left out), e.g. --{what} 0:1000")
    return lo, hi


@dataclass(frozen=True)
class CopyPlan:
    """What a copy takes from its source: a version, hooks (None: all), a row range and an example-id range."""

    version: int
    hooks: tuple[str, ...] | None = None
    rows: tuple[int, int] | None = None
    examples: tuple[int, int] | None = None

    @property
    def whole_units(self) -> bool:
        """Every column of the selected units is kept (rows still may be filtered per unit)."""
        return self.hooks is None

    def identity(self, source: Manifest) -> dict:
        """The copy's settings as a job identity: a resumed copy must have the same ones."""
        return {"copy_of": source.dataset_id, "version": self.version,
                "hooks": list(self.hooks) if self.hooks is not None else "all",
                "rows": list(self.rows) if self.rows else "all",
                "examples": list(self.examples) if self.examples else "all"}


@dataclass
class CopySummary(JsonRecord):
    src: str
    dst: str
    source_id: str
    version: int
    hooks: list[str]
    units: int  #: units of the source version the filters select
    copied_units: int  #: copied by this run (the rest were committed by an earlier run)
    rows: int
    bytes_read: int
    bytes_written: int
    seconds: float
    unchanged_units: int = 0  #: units put as the same bytes (no filter cut into them)
    artifacts: list[str] = field(default_factory=list)


@dataclass
class _UnitJob:
    entry: UnitEntry
    row_offset: int  #: the unit's first row in the source version


def _selected(units: list[UnitEntry], plan: CopyPlan) -> list[_UnitJob]:
    """The units a plan's filters touch (by row offsets and recorded example ranges), in order."""
    out, offset = [], 0
    for u in units:
        start, offset = offset, offset + u.rows
        if plan.rows and (offset <= plan.rows[0] or start >= plan.rows[1]):
            continue
        er = u.example_range
        if plan.examples and er is not None and (er[1] < plan.examples[0] or er[0] >= plan.examples[1]):
            continue
        out.append(_UnitJob(u, start))
    return out


def _row_mask(table: pa.Table, job: _UnitJob, plan: CopyPlan) -> np.ndarray | None:
    """Which rows of a unit's table the filters keep (None: all of them)."""
    n = table.num_rows
    keep = np.ones(n, dtype=bool)
    if plan.rows:
        pos = np.arange(job.row_offset, job.row_offset + n)
        keep &= (pos >= plan.rows[0]) & (pos < plan.rows[1])
    if plan.examples:
        ids = table.column(EXAMPLE_ID).to_numpy(zero_copy_only=False)
        keep &= (ids >= plan.examples[0]) & (ids < plan.examples[1])
    return None if keep.all() else keep


class DatasetCopier:
    """Copies a source version into a destination writer (see the module docstring); no I/O outside
    ``Storage``."""

    def __init__(self, src: Storage, manifest: Manifest, plan: CopyPlan, threads: int = 8) -> None:
        self.src, self.manifest, self.plan, self.threads = src, manifest, plan, threads
        self.bytes_read = self.bytes_written = self.unchanged = 0

    def read_checked(self, entry: UnitEntry) -> bytes:
        """A unit's bytes, checked against its manifest entry before anything is written from them."""
        try:
            data = self.src.get_bytes(entry.path)
        except FileNotFoundError:
            raise CorruptDataError(f"{self.src.display(entry.path)}: missing, but version {self.manifest.version} "
                                   "names it. Run `actlake verify` on the source.", "missing") from None
        got = checksum(data)
        if len(data) != entry.bytes or got != entry.checksum:
            raise CorruptDataError(
                f"{self.src.display(entry.path)}: {len(data)} bytes with checksum {got}, but the manifest of version "
                f"{self.manifest.version} records {entry.bytes} bytes with {entry.checksum}: the file was damaged or "
                "replaced. Nothing of it was copied; run `actlake verify` on the source.", "checksum mismatch")
        self.bytes_read += len(data)
        return data

    def recorded_stats(self, entry: UnitEntry, data: bytes) -> dict | None:
        """The unit's statistics as the file's own footer holds them (format v4; ``data``: the file's checked
        bytes), else from its kept commit record when that is of exactly this file (its checksum, formats v1-v3);
        None otherwise (a replaced unit, a record the store cannot serve): then they are computed again."""
        import json

        from shards.commits import CommitRecord
        from shards.partials import STATS_KEY
        from shards.stats import HookStats

        raw = (pq.ParquetFile(pa.BufferReader(data)).metadata.metadata or {}).get(STATS_KEY.encode())
        if raw is not None:
            return {h: HookStats.from_json(s) for h, s in json.loads(raw).items()}
        if entry.bytes < RECORD_STATS_FROM:  # decoding a small file costs less than fetching its record
            return None
        try:
            record = CommitRecord.read(self.src, entry.id, legacy=True)
        except (FileNotFoundError, ValueError, KeyError, TypeError, StorageError):
            return None
        return record.stats if record.unit.checksum == entry.checksum else None

    def copy_unit(self, job: _UnitJob, unit_writer):
        """One unit: its commit record in the destination, or None when the filters keep none of its rows."""
        data = self.read_checked(job.entry)
        table = pq.read_table(pa.BufferReader(data), columns=None if self.plan.whole_units else
                              [*unit_writer.schema.arrow_schema().names])
        mask = _row_mask(table, job, self.plan)
        if mask is not None and not mask.any():
            return None
        if mask is None and self.plan.whole_units:
            stats = self.recorded_stats(job.entry, data)
            record = unit_writer.write_file(job.entry.id, data, job.entry.skipped, stats)
            self.unchanged += 1
        else:
            table = table if mask is None else table.filter(pa.array(mask))
            record = unit_writer.write_table(job.entry.id, table, job.entry.skipped)
        self.bytes_written += record.unit.bytes
        return record

    def run(self, writer, jobs: list[_UnitJob], on_unit: Callable[[int], None] | None = None) -> int:
        """Copy ``jobs`` (those the writer has not committed), ``threads`` at a time, folding each commit record
        into ``writer`` as it arrives; the number of units copied."""
        done = set(writer.units)
        todo = [j for j in jobs if j.entry.id not in done]
        unit_writer = writer.unit_writer()
        copied = 0
        with ThreadPoolExecutor(self.threads) as pool:
            for record in pool.map(lambda j: self.copy_unit(j, unit_writer), todo):
                if record is not None:
                    writer.commit(record)
                    copied += 1
                if on_unit is not None:
                    on_unit(1)
        return copied


def _same_copy_but_version(existing: Manifest, identity: dict) -> int | None:
    """The source version an existing copy at the destination was planned on, when it is this copy (same source
    dataset, hooks and filters) of another version; None otherwise."""
    old = existing.job_identity or {}
    if not isinstance(old, dict) or not isinstance(old.get("version"), int) or old["version"] == identity["version"]:
        return None
    same = {k: v for k, v in old.items() if k != "version"} == {k: v for k, v in identity.items() if k != "version"}
    return old["version"] if same else None


def _existing(dst: Storage) -> Manifest | None:
    """The dataset at the destination, or None when there is none yet."""
    from shards.manifest import read_manifest

    try:
        return read_manifest(dst, lazy=True)
    except DatasetNotFoundError:
        return None


def _check_destination(dst: Storage, existing: Manifest | None, identity: dict, overwrite: bool) -> str:
    """The writer mode for ``dst``: create, append (this copy resumed) or overwrite; a ConfigError before any
    work when it holds another dataset and ``overwrite`` was not given."""
    if existing is None:
        return "overwrite" if overwrite else "create"
    if existing.job_identity == identity:
        return "overwrite" if overwrite else "append"
    if overwrite:
        return "overwrite"
    planned = _same_copy_but_version(existing, identity)
    if planned is not None:  # this copy, asked for with --version N of another version than it was begun on
        raise ConfigError(
            f"{dst.display()} holds this copy of version {planned} of the source ({len(existing.units)} units "
            f"copied so far); this run asks for --version {identity['version']}. Rerun without --version (or with "
            f"--version {planned}) to resume that copy, or pass --overwrite to replace it with a copy of version "
            f"{identity['version']} (what was copied is discarded).")
    made = existing.job_identity or {"model": existing.provenance.model.name if existing.provenance.model else "?"}
    raise ConfigError(f"{dst.display()} holds another dataset (id {existing.dataset_id}, {made}); this copy is "
                      f"{identity}. Choose another destination, or pass --overwrite to replace it.")


def check_places(src: Storage, dst: Storage) -> None:
    """Refuse, before anything is read or written, a destination that is the source under another spelling
    (``SRC/.``, ``SRC/../name``, ``file://SRC``, a symlink), lies inside it or holds it, or lies inside another
    dataset: the copy would write among the files it reads (``--overwrite`` deleting them) or among another
    dataset's files."""
    from shards.locations import dataset_above, overlap

    where = overlap(dst, src)
    if where == "same":
        raise ConfigError(f"DST is SRC ({dst.display()} and {src.display()} are the same place): a copy needs "
                          "another place (with --overwrite it would delete what it copies)")
    if where == "inside":
        raise ConfigError(f"DST {dst.display()} lies inside SRC {src.display()}: the copy's files would mix with "
                          "the source's (and `verify --repair` of the source would delete them). Choose a DST "
                          "outside SRC.")
    if where == "contains":
        raise ConfigError(f"DST {dst.display()} holds SRC {src.display()}: the copy would make the source a "
                          "dataset inside another, and --overwrite would delete it. Choose a DST that does not "
                          "contain SRC.")
    above = dataset_above(dst)
    if above is not None:
        raise ConfigError(f"DST {dst.display()} lies inside the dataset {above}: the copy's files would mix with "
                          "that dataset's (and its `verify --repair` or --overwrite would delete them). Choose a "
                          "DST outside any dataset.")


def copy_dataset(src: str, dst: str, plan_of: Callable[[Manifest], CopyPlan], *,
                 src_options: StorageOptions | dict | None = None, dst_options: StorageOptions | dict | None = None,
                 overwrite: bool = False, threads: int = 8, version: int | None = None, config: dict | None = None,
                 provenance: dict | None = None) -> CopySummary:
    """Copy version ``version`` (default: the latest) of ``src`` to ``dst`` as ``plan_of(source manifest)`` says,
    showing progress. Checks everything it can before any work; ``provenance``: sections added to the copy's
    (e.g. its card's licence)."""
    from shards.progress import Progress
    from shards.reader import open_dataset
    from shards.writer import create_dataset

    t0 = time.perf_counter()
    dst_storage = Storage(dst, dst_options)
    check_places(Storage(src, src_options), dst_storage)
    dst_storage.require_writable("a copy's destination")
    source = open_dataset(src, src_options, version=version)
    m = source.manifest
    plan = plan_of(m)
    identity = plan.identity(m)
    existing = _existing(dst_storage)
    planned = _same_copy_but_version(existing, identity) if existing is not None else None
    if planned is not None and version is None and not overwrite:
        source = _planned_source(src, src_options, source, planned, dst_storage)
        m = source.manifest
        plan = plan_of(m)
        identity = plan.identity(m)
    units = list(source.units)
    jobs = _selected(units, plan)
    if not jobs:
        raise ConfigError(f"the filters (rows {plan.rows}, examples {plan.examples}) select no row of "
                          f"{source.storage.display()} version {m.version} ({m.num_rows:,} rows, example ids "
                          f"{_example_span(units)}): nothing to copy")
    mode = _check_destination(dst_storage, existing, identity, overwrite)
    hooks = list(plan.hooks) if plan.hooks is not None else list(m.hooks)
    prov = Provenance(model=m.provenance.model,
                      derived_from=DatasetRef(redact_uri(source.storage.display()), m.dataset_id, m.version,
                                              tuple(hooks)),
                      details={**m.provenance.details, "copy": {k: v for k, v in identity.items() if k != "copy_of"},
                               **(provenance or {})})
    writer = create_dataset(dst, {h: m.hooks[h] for h in hooks}, dict(m.schema.columns), mode,
                            compression=m.compression, row_group_bytes=m.row_group_bytes, provenance=prov,
                            config=config or {"command": "copy"}, job_identity=identity,
                            storage_options=dst_options, allow_nonfinite=True,
                            commit_interval=COMMIT_INTERVAL_S)
    copier = DatasetCopier(source.storage, m, plan, threads)
    try:
        with Progress(len(jobs), "unit", "copying", log) as bar:
            copied = copier.run(writer, jobs, bar.update)
        artifacts = _copy_artifacts(copier, writer, m) if plan.whole_units else []
        writer.close()
    except BaseException:
        writer.abort(remove_if_empty=True)
        raise
    out = writer.manifest
    return CopySummary(src=source.storage.display(), dst=dst_storage.display(), source_id=m.dataset_id,
                       version=m.version, hooks=hooks, units=len(jobs), copied_units=copied, rows=out.num_rows,
                       bytes_read=copier.bytes_read, bytes_written=copier.bytes_written,
                       seconds=round(time.perf_counter() - t0, 2), unchanged_units=copier.unchanged,
                       artifacts=artifacts)


def _planned_source(src: str, src_options, source, planned: int, dst_storage: Storage):
    """A copy killed (or finished) before the source grew: the source at the version the copy was planned on, as
    a rerun of the same command promises (a copy of the newer version is asked for by naming it)."""
    from shards.reader import open_dataset

    latest = source.manifest.version
    try:
        older = open_dataset(src, src_options, version=planned)
    except DatasetNotFoundError as exc:
        raise ConfigError(f"{dst_storage.display()} holds this copy of version {planned} of "
                          f"{source.storage.display()}, begun earlier, but the source no longer keeps that "
                          f"version ({exc}). Pass --overwrite to copy version {latest} afresh (what was copied "
                          "is discarded).") from None
    log.warning("%s holds this copy of version %d of %s (begun earlier; the source is now at version %d): "
                "resuming it on version %d. To copy version %d instead, rerun with --version %d --overwrite.",
                dst_storage.display(), planned, source.storage.display(), latest, planned, latest, latest)
    return older


def _copy_artifacts(copier: DatasetCopier, writer, m: Manifest) -> list[str]:
    """The files stored with the source (unembedding, weights), checked against their checksums."""
    names = []
    for name, art in m.artifacts.items():
        data = copier.src.get_bytes(art.path)
        if checksum(data) != art.checksum:
            raise CorruptDataError(f"{copier.src.display(art.path)}: checksum {checksum(data)} != manifest "
                                   f"{art.checksum}", "checksum mismatch")
        writer.put_artifact(name, data, art.kind)
        names.append(name)
    return names


def _example_span(units: list[UnitEntry]) -> str:
    ranges = [u.example_range for u in units if u.example_range is not None]
    return f"{min(r[0] for r in ranges)}..{max(r[1] for r in ranges)}" if ranges else "unknown"


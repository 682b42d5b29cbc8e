"""Writing one work unit: rows -> Parquet file -> commit record.

A ``UnitWriter`` is small and picklable so that Ray actors can write units straight to the destination
while the driver's ``DatasetWriter`` only folds their commit records into the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.checksums import HashingSink
from shards.codecs import get_codec
from shards.columns import EXAMPLE_ID, POSITION
from shards.commits import CommitRecord
from shards.dtypes import as_numpy, to_storage_numpy
from shards.errors import NonFiniteError, SchemaMismatchError
from shards.integrity import PAGE_CHECKSUMS_KEY
from shards.layout import check_unit_id, unit_attempt_path
from shards.manifest import FORMAT_VERSION, SkippedInput, UnitEntry, now_iso
from shards.partials import STATS_KEY
from shards.schema import FIXED_COLUMNS, DatasetSchema, HookSpec, arrow_type
from shards.stats import HookStats
from shards.storage import Storage

#: Parquet compressions a dataset may be written with (each config that writes one offers these)
Compression = Literal["none", "lz4", "zstd"]


def tensor_array(spec: HookSpec, values, n: int) -> pa.Array:
    """Arrow array of one hook's rows, zero-copy for the binary encoding."""
    shape = tuple(values.shape)
    if shape != (n, *spec.shape):
        raise SchemaMismatchError(f"hook {spec.name!r}: expected an array of shape {(n, *spec.shape)} "
                                  f"(rows, {', '.join(map(str, spec.shape))}), got {shape}")
    return get_codec(spec.encoding).encode(spec, to_storage_numpy(values, spec.dtype).reshape(n, -1))


def _column_array(values, typ: str, n: int, default=None) -> pa.Array:
    """One non-tensor column: given values, or ``default`` on every row (None: nulls)."""
    if values is None:
        return pa.nulls(n, arrow_type(typ)) if default is None else pa.array(np.full(n, default), arrow_type(typ))
    if isinstance(values, np.ma.MaskedArray):  # masked entries are nulls (a loss at a context's last token)
        return pa.array(np.ma.getdata(values).reshape(-1), arrow_type(typ),
                        mask=np.ma.getmaskarray(values).reshape(-1))
    flat = as_numpy(values).reshape(-1)
    # pyarrow casts safely: int64 ids into int32 columns, but never a truncated float
    return pa.array(flat.tolist() if typ == "string" or flat.dtype == object else flat, arrow_type(typ))


INLINE_STATS_BYTES = 1 << 20  #: units smaller than this compute their statistics before encoding, in one thread


class _Done:
    """A result already computed, with a future's ``result()``."""

    def __init__(self, value) -> None:
        self.value = value

    def result(self):
        return self.value


@dataclass(kw_only=True)
class UnitWriter:
    """Writes and commits single units of one dataset (safe to send to Ray actors)."""

    uri: str
    schema: DatasetSchema
    storage_options: dict = field(default_factory=dict)
    compression: str = "none"
    row_group_bytes: int = 32 << 20
    compute_stats: bool = True
    fsync: bool = True
    tick: str = ""  #: recorded in every unit this writer writes (scheduled extraction)
    allow_nonfinite: bool = False  #: write units holding NaN/±inf (counted in the statistics) instead of refusing
    #: the likeliest cause of NaN/±inf activations in this job, said first when a unit holds them (an extraction
    #: with --intervene: the intervention; "": the stored dtype's range)
    nonfinite_cause: str = ""
    #: the dataset its records belong to (format v4): records left by a dataset an overwrite replaced are never
    #: folded into the new one
    dataset_id: str = ""

    def __post_init__(self) -> None:
        self._storage: Storage | None = None
        #: called just before the commit record is written (the dataset writer's lock check, in its own process):
        #: a writer taken over while it wrote the unit's file writes no record over the new holder's
        self.before_record = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_storage": None, "before_record": None}

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = Storage(self.uri, self.storage_options)
        return self._storage

    # ---------------------------------------------------------------------
    def _check_columns(self, columns: dict) -> None:
        if EXAMPLE_ID not in columns:
            raise SchemaMismatchError("a unit needs an 'example_id' column (int64, one per row)")
        unknown = sorted(set(columns) - {*FIXED_COLUMNS, *self.schema.columns, *self.schema.hooks})
        if unknown:
            raise SchemaMismatchError(f"unknown columns {unknown}; this dataset has hooks {list(self.schema.hooks)} "
                                      f"and metadata columns {list(self.schema.columns)}")
        missing = sorted(set(self.schema.hooks) - set(columns))
        if missing:
            raise SchemaMismatchError(f"unit is missing hook columns {missing}")

    def build_table(self, columns: dict) -> pa.Table:
        """Validate one unit's columns and assemble its Arrow table."""
        self._check_columns(columns)
        n = len(as_numpy(columns[EXAMPLE_ID]).reshape(-1))
        defaults = {POSITION: -1}  # pooled rows; token_id stays null for images and pooled rows
        arrays = {name: _column_array(columns.get(name), typ, n, defaults.get(name))
                  for name, typ in {**FIXED_COLUMNS, **self.schema.columns}.items()}
        arrays.update({name: tensor_array(spec, columns[name], n) for name, spec in self.schema.hooks.items()})
        for name, arr in arrays.items():
            if len(arr) != n:
                raise SchemaMismatchError(f"column {name!r} has {len(arr)} rows, example_id has {n}")
        return pa.Table.from_arrays(list(arrays.values()), schema=self.schema.arrow_schema())

    def encode(self, table: pa.Table, sink, footer_stats=None) -> list[int]:
        """Write a unit's table as Parquet into ``sink``; return the row-group sizes. ``footer_stats()``: the
        unit's statistics, waited for just before the footer is written and kept in it (``STATS_KEY``): format v4
        reads a unit's partial statistics there (its commit record is removed once a version names it)."""
        meta_cols = self.schema.column_names
        rows_per_group = max(1, self.row_group_bytes // max(self.schema.row_bytes, 1))
        file_meta = {"actlake.format_version": str(FORMAT_VERSION), PAGE_CHECKSUMS_KEY.decode(): "crc32",
                     "actlake.hooks": json.dumps({n: h.to_json() for n, h in self.schema.hooks.items()})}
        with pq.ParquetWriter(
            sink, table.schema.with_metadata(file_meta),
            compression=self.compression.upper() if self.compression != "none" else "NONE",
            use_dictionary=meta_cols,  # never on tensors: random bytes do not repeat
            write_statistics=meta_cols,
            data_page_size=8 << 20,
            write_page_checksum=True,  # CRC32 per page: readers check what they read (docs/format.md)
        ) as w:
            w.write_table(table.replace_schema_metadata(file_meta), row_group_size=rows_per_group)
            stats = footer_stats() if footer_stats is not None else None
            if stats:
                w.add_key_value_metadata({STATS_KEY: json.dumps({h: s.to_json() for h, s in stats.items()},
                                                                separators=(",", ":"), allow_nan=False)})
        n = table.num_rows
        return [min(rows_per_group, n - s) for s in range(0, n, rows_per_group)] or [0]

    def unit_stats(self, columns: dict, n: int) -> dict[str, HookStats]:
        # numpy on this thread only: no second torch thread team beside the extraction's forward pass
        return {name: HookStats.from_storage(to_storage_numpy(columns[name], spec.dtype).reshape(n, -1), spec.dtype)
                for name, spec in self.schema.hooks.items()}

    def _check_finite(self, unit_id: int, stats: dict[str, HookStats]) -> None:
        """Refuse a unit holding NaN or ±inf activations (unless allowed): they make every statistic and every
        analysis of the hook undefined. Its file is left unnamed (garbage that ``vacuum`` removes)."""
        bad = {h: s.nonfinite for h, s in stats.items() if s.nonfinite}
        if bad and not self.allow_nonfinite:
            where = ", ".join(f"{h} ({n:,} values)" for h, n in bad.items())
            cause = f"{self.nonfinite_cause} Otherwise: " if self.nonfinite_cause else ""
            raise NonFiniteError(
                f"unit {unit_id} of {self.storage.display()} holds NaN or infinite activations in {where}. {cause}"
                "float16 overflows above 65,504: extract with --dtype bfloat16 or float32; if the model itself emits "
                "them, --allow-nonfinite writes them and counts them per hook in the manifest (analyses then refuse "
                "those hooks)")

    def write(self, unit_id: int, columns: dict, skipped: Sequence[SkippedInput] = ()) -> CommitRecord:
        """Write unit ``unit_id``'s file and commit record; return the record.

        ``skipped`` lists the unit's inputs left out on purpose (e.g. unreadable images); it is kept
        in the record and the manifest. The file is put whole (an atomic PUT, or temp file + rename on
        disk) under a name of its own (``unit-000017-<attempt>.parquet``: a committed file is never
        rewritten, so a reader of an older version is never disturbed), then the commit record, which names
        it; a crash in between leaves an unnamed file that readers never see and ``vacuum`` removes.
        """
        unit_id = check_unit_id(unit_id)  # before anything is written: no orphan file for a bad id
        table = self.build_table(columns)
        stats = (lambda: self.unit_stats(columns, table.num_rows)) if self.compute_stats else None
        return self._write(unit_id, table, stats, skipped)

    def write_table(self, unit_id: int, table: pa.Table, skipped: Sequence[SkippedInput] = ()) -> CommitRecord:
        """Write and commit a unit from an Arrow table holding this dataset's columns (e.g. a filtered copy of
        another dataset's unit: same column types); statistics from its stored values."""
        unit_id = check_unit_id(unit_id)
        schema = self.schema.arrow_schema()
        missing = [n for n in schema.names if n not in table.column_names]
        if missing:
            raise SchemaMismatchError(f"unit {unit_id}: the table lacks columns {missing}")
        table = table.select(schema.names).cast(schema)
        stats = (lambda: self.table_stats(table)) if self.compute_stats else None
        return self._write(unit_id, table, stats, skipped)

    def table_stats(self, table: pa.Table) -> dict[str, HookStats]:
        """Each hook's statistics from an Arrow table's stored values (decoded without a copy)."""
        return {name: HookStats.from_storage(get_codec(spec.encoding).decode(spec, table.column(name)), spec.dtype)
                for name, spec in self.schema.hooks.items()}

    def write_file(self, unit_id: int, data: bytes, skipped: Sequence[SkippedInput] = (),
                   stats: dict[str, HookStats] | None = None) -> CommitRecord:
        """Commit a unit whose Parquet bytes are given whole (a copy of another dataset's file with this schema,
        already checked against its checksum): put as they are. ``stats``: the file's statistics as its source's
        commit record holds them (else computed from its decoded values)."""
        import pyarrow.parquet as pq

        unit_id = check_unit_id(unit_id)
        pf = pq.ParquetFile(pa.BufferReader(data))
        if not pf.schema_arrow.remove_metadata().equals(self.schema.arrow_schema().remove_metadata()):
            raise SchemaMismatchError(f"unit {unit_id}: the file's columns differ from the dataset's")
        known = stats is not None and set(stats) == set(self.schema.hooks)
        table = pf.read(columns=None if not known and self.compute_stats else [EXAMPLE_ID])
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] or [0]
        stats_fn = (lambda: stats) if known else (lambda: self.table_stats(table)) if self.compute_stats else None

        def put(sink, _footer) -> list[int]:  # the bytes as they are (their checksum is the source's)
            sink.write(data)
            return groups

        return self._write(unit_id, table, stats_fn, skipped, put)

    def _write(self, unit_id: int, table: pa.Table, stats_fn, skipped: Sequence[SkippedInput],
               encode=None) -> CommitRecord:
        """Put the unit's file (``encode(sink)`` -> row-group sizes; default: Parquet-encode ``table``) under an
        attempt name of its own, then its commit record."""
        import uuid

        path = unit_attempt_path(unit_id, uuid.uuid4().hex[:8])
        encode = encode or (lambda sink, footer: self.encode(table, sink, footer))

        # Statistics (numpy) and Parquet encoding (Arrow) both release the GIL: run them side by side; the footer
        # waits for them (they go into it), and a unit refused for NaN/inf is never completed (no file left). A
        # small unit's statistics are computed first, in this thread: starting a thread costs ~1 ms, more than
        # both take for a unit under a megabyte (measured with bench_scale's tiny units: 9 -> 8 ms per unit).
        inline = stats_fn is None or table.nbytes < INLINE_STATS_BYTES
        with ThreadPoolExecutor(1) if not inline else nullcontext() as pool:
            stats_future = _Done(stats_fn() if stats_fn else {}) if inline else pool.submit(stats_fn)

            def stats_now() -> dict[str, HookStats]:
                stats = stats_future.result()
                self._check_finite(unit_id, stats)
                return stats

            def attempt() -> tuple[list[int], HashingSink]:
                with self.storage.open_output(path, fsync=self.fsync) as raw:
                    sink = HashingSink(raw)
                    groups = encode(sink, stats_now)
                return groups, sink

            groups, sink = self.storage.call("write", path, attempt)
            stats = stats_now()
        ids = table.column(EXAMPLE_ID)
        example_range = (int(pc.min(ids).as_py()), int(pc.max(ids).as_py())) if table.num_rows else None
        entry = UnitEntry(id=int(unit_id), path=path, rows=table.num_rows, bytes=sink.size, checksum=sink.checksum(),
                          row_groups=tuple(groups), example_range=example_range, committed=now_iso(),
                          skipped=tuple(skipped), tick=self.tick)
        record = CommitRecord(entry, self.schema, stats, dataset_id=self.dataset_id)
        if self.before_record is not None:
            self.before_record()
        record.write(self.storage, self.fsync)
        return record

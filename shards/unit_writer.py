"""Writing one work unit: rows -> Parquet file -> commit record.

A ``UnitWriter`` is small and picklable so that Ray actors can write units
straight to the destination while the driver's ``DatasetWriter`` only folds
their commit records into the manifest.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from shards.dtypes import storage_to_float32, storage_to_torch, to_storage_numpy
from shards.errors import SchemaMismatchError
from shards.manifest import FORMAT_VERSION, dumps, now_iso, unit_commit_path, unit_data_path
from shards.schema import FIXED_COLUMNS, DatasetSchema, HookSpec, arrow_type
from shards.stats import HookStats
from shards.storage import Storage

CHECKSUM_ALGO = "xxh3_128"


def checksum(data) -> str:
    """Checksum as recorded in the manifest: ``xxh3_128:<32 hex digits>``."""
    return f"{CHECKSUM_ALGO}:{xxhash.xxh3_128_hexdigest(data)}"


class HashingSink:
    """A write-only file that checksums what passes through it on the way to ``raw``.

    Hashing while writing saves a second pass over the file (or holding it all in memory).
    """

    def __init__(self, raw) -> None:
        self.raw = raw
        self.size = 0
        self._hash = xxhash.xxh3_128()
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self.raw.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:  # the owner of ``raw`` closes it
        self.closed = True

    def writable(self) -> bool:
        return True

    def checksum(self) -> str:
        return f"{CHECKSUM_ALGO}:{self._hash.hexdigest()}"


def _as_numpy(values) -> np.ndarray:
    try:
        import torch

        if isinstance(values, torch.Tensor):
            return values.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(values)


def tensor_array(spec: HookSpec, values, n: int) -> pa.Array:
    """Arrow array of one hook's rows, zero-copy for the binary encoding."""
    shape = tuple(values.shape)
    if shape != (n, *spec.shape):
        raise SchemaMismatchError(
            f"hook {spec.name!r}: expected an array of shape {(n, *spec.shape)} "
            f"(rows, {', '.join(map(str, spec.shape))}), got {shape}"
        )
    store = to_storage_numpy(values, spec.dtype).reshape(n, -1)
    if spec.encoding == "binary":
        buf = pa.py_buffer(np.ascontiguousarray(store).reshape(-1).view(np.uint8))
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(spec.row_bytes), n, [None, buf])
    flat = store.reshape(-1)
    if spec.dtype == "bfloat16":
        flat = storage_to_float32(flat, "bfloat16")
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), spec.numel)


@dataclass
class UnitWriter:
    """Writes and commits single units of one dataset (safe to send to Ray actors)."""

    uri: str
    schema_json: dict
    storage_options: dict = field(default_factory=dict)
    compression: str = "none"
    row_group_bytes: int = 32 << 20
    compute_stats: bool = True
    fsync: bool = True

    def __post_init__(self) -> None:
        self.schema = DatasetSchema.from_json(self.schema_json)
        self._storage: Storage | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_storage"] = None
        return state

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = Storage(self.uri, self.storage_options)
        return self._storage

    # ---------------------------------------------------------------------
    def build_table(self, columns: dict) -> pa.Table:
        """Validate one unit's columns and assemble its Arrow table."""
        if "example_id" not in columns:
            raise SchemaMismatchError("a unit needs an 'example_id' column (int64, one per row)")
        expected = set(FIXED_COLUMNS) | set(self.schema.columns) | set(self.schema.hooks)
        unknown = sorted(set(columns) - expected)
        if unknown:
            raise SchemaMismatchError(
                f"unknown columns {unknown}; this dataset has hooks {list(self.schema.hooks)} "
                f"and metadata columns {list(self.schema.columns)}"
            )
        missing = sorted(set(self.schema.hooks) - set(columns))
        if missing:
            raise SchemaMismatchError(f"unit is missing hook columns {missing}")
        example_id = _as_numpy(columns["example_id"]).astype(np.int64, copy=False).reshape(-1)
        n = len(example_id)
        arrays: dict[str, pa.Array] = {"example_id": pa.array(example_id, pa.int64())}
        position = columns.get("position")
        position = np.full(n, -1, np.int32) if position is None else _as_numpy(position).astype(np.int32).reshape(-1)
        arrays["position"] = pa.array(position, pa.int32())
        token_id = columns.get("token_id")
        arrays["token_id"] = (pa.nulls(n, pa.int32()) if token_id is None
                              else pa.array(_as_numpy(token_id).astype(np.int32).reshape(-1), pa.int32()))
        for name, typ in self.schema.columns.items():
            vals = columns.get(name)
            if vals is None:
                arrays[name] = pa.nulls(n, arrow_type(typ))
            else:
                arrays[name] = pa.array(_as_numpy(vals).reshape(-1).tolist() if typ == "string"
                                        else _as_numpy(vals).reshape(-1), arrow_type(typ))
        for name, spec in self.schema.hooks.items():
            arrays[name] = tensor_array(spec, columns[name], n)
        for name, arr in arrays.items():
            if len(arr) != n:
                raise SchemaMismatchError(f"column {name!r} has {len(arr)} rows, example_id has {n}")
        return pa.Table.from_arrays(list(arrays.values()), schema=self.schema.arrow_schema())

    def encode(self, table: pa.Table, sink) -> list[int]:
        """Write a unit's table as Parquet into ``sink``; return the row-group sizes."""
        meta_cols = ["example_id", "position", "token_id", *self.schema.columns]
        rows_per_group = max(1, self.row_group_bytes // max(self.schema.row_bytes, 1))
        file_meta = {"actlake.format_version": str(FORMAT_VERSION),
                     "actlake.hooks": json.dumps({n: h.to_json() for n, h in self.schema.hooks.items()})}
        table = table.replace_schema_metadata(file_meta)
        with pq.ParquetWriter(
            sink, table.schema,
            compression=self.compression.upper() if self.compression != "none" else "NONE",
            use_dictionary=meta_cols,  # never on tensors: random bytes do not repeat
            write_statistics=meta_cols,
            data_page_size=8 << 20,
        ) as w:
            w.write_table(table, row_group_size=rows_per_group)
        n = table.num_rows
        return [min(rows_per_group, n - s) for s in range(0, n, rows_per_group)] or [0]

    def unit_stats(self, columns: dict, n: int) -> dict[str, HookStats]:
        out = {}
        for name, spec in self.schema.hooks.items():
            store = to_storage_numpy(columns[name], spec.dtype).reshape(n, -1)
            out[name] = HookStats.from_rows(storage_to_torch(store, spec.dtype))
        return out

    def write(self, unit_id: int, columns: dict, skipped: list | None = None) -> dict:
        """Write unit ``unit_id``'s file and commit record; return the commit record.

        ``skipped`` lists the unit's inputs left out on purpose (e.g. unreadable
        images, by id and reason); it is kept in the record and the manifest.

        The file is put whole (an atomic PUT, or temp file + rename on disk),
        then the commit record; a crash in between leaves an unnamed file
        that readers never see and a rerun overwrites.
        """
        table = self.build_table(columns)
        path = unit_data_path(unit_id)

        def attempt() -> tuple[list[int], HashingSink]:
            with self.storage.open_output(path, fsync=self.fsync) as raw:
                sink = HashingSink(raw)
                groups = self.encode(table, sink)
            return groups, sink

        # Statistics (torch) and Parquet encoding (Arrow) both release the GIL: run them side by side.
        with ThreadPoolExecutor(1) as pool:
            stats_future = pool.submit(self.unit_stats, columns, table.num_rows) if self.compute_stats else None
            groups, sink = self.storage.retry("write", path, attempt)
            stats = stats_future.result() if stats_future is not None else {}
        example_id = table.column("example_id")
        record = {
            "format_version": FORMAT_VERSION,
            "id": int(unit_id),
            "path": path,
            "rows": table.num_rows,
            "bytes": sink.size,
            "checksum": sink.checksum(),
            "row_groups": groups,
            "example_range": [int(pc.min(example_id).as_py() or 0),
                              int(pc.max(example_id).as_py() or -1)] if table.num_rows else None,
            "schema": self.schema.fingerprint(),
            "schema_json": self.schema.to_json(),
            "committed": now_iso(),
            "stats": {n: s.to_json() for n, s in stats.items()},
        }
        if skipped:
            record["skipped"] = list(skipped)
        self.storage.put_bytes(unit_commit_path(unit_id), dumps(record))
        return record


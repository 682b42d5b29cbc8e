"""Reading datasets: the ``Dataset`` object (batches as torch tensors, random access, whole columns)."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from shards.batches import BatchIterator, Cursor, Window
from shards.codecs import get_codec, single_array
from shards.dtypes import DTYPES, resolve_torch_dtype, storage_to_numpy, storage_to_torch
from shards.files import FileCache
from shards.layout import stats_path
from shards.manifest import Manifest, read_manifest
from shards.schema import INT_NULL, HookSpec
from shards.shuffle import Slice
from shards.stats import HookStats
from shards.storage import Storage, StorageOptions


def open_dataset(uri: str, storage_options: StorageOptions | dict | None = None, version: int | None = None) -> Dataset:
    """Open a committed dataset for reading (only units named by its manifest are visible).

    The dataset is read as of one version, the latest unless ``version`` names an older kept one: it keeps
    reading exactly that version while other jobs append (committed files are never rewritten), and a copy
    sent to Ray workers or DataLoader processes reads the same version.

    Example::

        ds = open_dataset("s3://bucket/acts/minilm")
        for batch in ds.iter_batches(["resid.3"], batch_size=4096, shuffle=True, seed=0):
            x = batch["resid.3"]          # float32 tensor (4096, 384)
    """
    from shards.pins import split_pin

    base, pinned = split_pin(uri)  # ``URI@vN``, as every command takes it
    if pinned is not None:
        if version is not None and version != pinned:
            raise ValueError(f"{uri!r} pins version {pinned} and version={version} asks for another: give one")
        uri, version = base, pinned
    return Dataset(uri, storage_options, version)


def decode_metadata(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A non-tensor column as numpy: strings as an object array, nulls in integer columns as -1."""
    arr = single_array(column)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return np.asarray(arr.to_pylist(), dtype=object)
    if arr.null_count and pa.types.is_integer(arr.type):
        arr = arr.fill_null(INT_NULL)
    return arr.to_numpy(zero_copy_only=False)


def _row_groups(units) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit index, index in the unit, rows) of every row group, in order: from the columns of a format v3 unit
    table at once (no object per unit), or unit by unit from a list."""
    if hasattr(units, "row_group_arrays"):
        return units.row_group_arrays()
    groups = np.asarray([(ui, gi, rows) for ui, u in enumerate(units) for gi, rows in enumerate(u.row_groups)],
                        dtype=np.int64).reshape(-1, 3)
    return tuple(groups[:, i].copy() for i in range(3))


class _RowGroups(NamedTuple):
    """One entry per row group of a dataset, in order."""

    unit: np.ndarray  #: the index of its unit
    index: np.ndarray  #: its index in the unit
    rows: np.ndarray
    start: np.ndarray  #: its first row in the dataset (one more entry: the row count)


def _slice_pages(pages: list[np.ndarray], start: int, stop: int) -> list[np.ndarray]:
    """Rows [start, stop) of a row group stored as consecutive page views."""
    out, pos = [], 0
    for p in pages:
        a, b = max(start, pos), min(stop, pos + len(p))
        if a < b:
            out.append(p[a - pos:b - pos])
        pos += len(p)
    return out


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0)


class Dataset:
    """A committed activation dataset (see ``open_dataset``)."""

    def __init__(self, uri: str, storage_options: StorageOptions | dict | None = None,
                 version: int | None = None) -> None:
        self.uri = uri
        self.storage = Storage(uri, storage_options)
        self.storage_options = self.storage.storage_options
        self.manifest: Manifest = read_manifest(self.storage, version, lazy=True)
        self.storage.check_range_reads()  # a web server: before any work, not at the first row group
        self.schema = self.manifest.schema
        self.units = self.manifest.units  #: a v3 dataset's is read when first used (``LazyUnitTable``)
        self.files = FileCache(self.storage, on_missing=self._missing_file)
        self._stats: dict[str, HookStats] = {}
        self._pending_partials: list | None = None  #: own statistics of the units added since the stats files
        self.zero_copy = True  #: read local uncompressed tensors straight from the page cache

    @functools.cached_property
    def _groups(self) -> _RowGroups:
        unit, index, rows = _row_groups(self.units)
        return _RowGroups(unit, index, rows, np.concatenate([[0], np.cumsum(rows)]).astype(np.int64))

    @property
    def group_rows(self) -> np.ndarray:
        """The rows of every row group, in order (what shuffling and rank plans are made of)."""
        return self._groups.rows

    def _missing_file(self, unit) -> Exception:
        """Why a file this version names is gone: the version was vacuumed while this object read it, or the
        dataset is damaged."""
        from shards.errors import CorruptDataError, DatasetNotFoundError
        from shards.manifest import list_versions

        latest = read_manifest(self.storage)
        if self.version != latest.version and self.version not in list_versions(self.storage):
            return DatasetNotFoundError(
                f"{self.storage.display()}: version {self.version} was vacuumed while it was being read (its file "
                f"{unit.path} is gone; latest {latest.version}). Open a kept version (`actlake versions`), and "
                "keep as many versions as readers may be pinned to (`actlake vacuum --keep N`).")
        return CorruptDataError(f"{self.storage.display(unit.path)}: missing, but version {self.version} names it. "
                                "Run `actlake verify` (and `--repair`) on the dataset.", "missing")

    def __getstate__(self) -> dict:  # for DataLoader workers and Ray tasks: the same version, not the latest
        return {"uri": self.uri, "storage_options": self.storage_options, "version": self.version}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"], state["storage_options"], state.get("version"))

    def __repr__(self) -> str:
        return f"Dataset({self.storage.display()!r}, rows={self.num_rows}, units={len(self.units)}, hooks={self.hooks})"

    # --- description -----------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self.schema.hooks)

    @property
    def columns(self) -> list[str]:
        """Non-tensor columns: example_id, position, token_id and the metadata columns."""
        return self.schema.column_names

    @property
    def num_rows(self) -> int:
        return self.manifest.num_rows  # a v3 root's count: no unit list read for it

    @property
    def dataset_id(self) -> str:
        return self.manifest.dataset_id

    @property
    def version(self) -> int:
        """The version this object reads (every manifest commit makes one; ``actlake versions`` lists them)."""
        return self.manifest.version

    def __len__(self) -> int:
        return self.num_rows

    def hook_spec(self, hook: str) -> HookSpec:
        self.schema.resolve_hooks([hook], self.storage.display())
        return self.schema.hooks[hook]

    def stats(self, hook: str) -> HookStats:
        """Merged statistics of ``hook`` over all committed units."""
        spec = self.hook_spec(hook)
        if hook not in self._stats and not self.num_rows and hook not in self.manifest.stats_files:
            # no unit, no statistics file: the statistics of no row (not a missing file)
            import numpy as np

            self._stats[hook] = HookStats.empty(int(np.prod(spec.shape)))
        if hook not in self._stats:
            from shards.errors import CorruptDataError
            from shards.stats_files import read_stats_file

            path = self.manifest.stats_files.get(hook, stats_path(hook))  # v2: this version's own file
            try:
                self._stats[hook], _units = read_stats_file(self.storage, hook, path)
                if self.manifest.stats_pending:  # format v4: the units added since that file, merged in
                    from shards.partials import PendingUnit, all_partials, merge

                    if self._pending_partials is None:  # each unit's footer holds every hook's: read once
                        self._pending_partials = all_partials(
                            self.storage, [PendingUnit(*p) for p in self.manifest.stats_pending], self.schema)
                    self._stats[hook] = merge({hook: self._stats[hook]}, [
                        {hook: p[hook]} for p in self._pending_partials])[hook]
            except FileNotFoundError:
                where = " (on the store it is served from)" if self.storage.read_only else ""
                raise CorruptDataError(
                    f"{self.storage.display(path)} is missing: version {self.version} names it as the statistics of "
                    f"{hook!r}. `actlake verify --repair {self.storage.display()}`{where} rebuilds them from the "
                    "commit records.", "missing") from None
        return self._stats[hook]

    def read_artifact(self, name: str, fix: str) -> bytes | None:
        """The bytes of ``artifacts/<name>`` checked against the manifest's checksum (None when the dataset
        stores none); ``fix`` ends the error a damaged file raises."""
        from shards.checksums import checksum
        from shards.errors import CorruptDataError

        entry = self.manifest.artifacts.get(name)
        if entry is None:
            return None
        data = self.storage.get_bytes(entry.path)
        if checksum(data) != entry.checksum:
            problem = f"checksum {checksum(data)} != manifest {entry.checksum}"
            raise CorruptDataError(f"{self.storage.display(entry.path)}: {problem}. {fix}", problem)
        return data

    # --- file access -------------------------------------------------------------
    def _read_group(self, group: int, columns: list[str]) -> pa.Table:
        unit, gi = self.units[int(self._groups.unit[group])], int(self._groups.index[group])
        return self.storage.call("read", unit.path, lambda: self.files.get(unit).read_row_group(gi, columns),
                                 missing_ok=True)

    def _page_rows(self, group: int, hook: str) -> list[np.ndarray] | None:
        """Page-cache views of ``hook``'s rows in ``group`` (local, uncompressed, binary), or None."""
        spec = self.schema.hooks[hook]
        if not self.zero_copy or spec.encoding != "binary":
            return None
        unit = self.units[int(self._groups.unit[group])]
        return self.files.get(unit).page_rows(int(self._groups.index[group]), hook, spec.row_bytes)

    def read_window(self, slices: list[Slice], hooks: list[str], meta: list[str]) -> Window:
        """Rows of several row-group slices: tensor columns as views of the page cache (local, uncompressed)
        or of Arrow's decoded buffers, never concatenated."""
        segments: dict[str, list] = {h: [] for h in hooks}
        meta_parts: dict[str, list] = {c: [] for c in meta}
        tables: dict[int, pa.Table] = {}
        for s in slices:
            pages = {h: self._page_rows(s.group, h) for h in hooks}
            cols = [*meta, *(h for h in hooks if pages[h] is None)]
            part = None
            if cols:
                if s.group not in tables:
                    tables.clear()
                    tables[s.group] = self._read_group(s.group, cols)
                part = tables[s.group].slice(s.start, s.stop - s.start)
            for h in hooks:
                segments[h] += (_slice_pages(pages[h], s.start, s.stop) if pages[h] is not None
                                else [get_codec(self.schema.hooks[h].encoding).decode(self.schema.hooks[h],
                                                                                      part.column(h))])
            for c in meta:
                meta_parts[c].append(decode_metadata(part.column(c)))
        return Window(segments, {c: _concat(p) for c, p in meta_parts.items()})

    # --- public reading API --------------------------------------------------------
    def _start(self, start, seed: int, rank: int, world_size: int, epoch: int) -> tuple[int, int]:
        """(epoch, offset) to begin at: a saved cursor (checked against the arguments) or a row offset."""
        if isinstance(start, dict):
            start = Cursor.from_json(start)
        if isinstance(start, Cursor):
            start.check_matches(seed, rank, world_size)
            return start.epoch, start.offset
        return epoch, int(start or 0)

    def iter_batches(self, hooks=None, batch_size: int = 4096, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                     rank: int = 0, world_size: int = 1, drop_last: bool = False,
                     start: Cursor | dict | int | None = None, dtype="float32", columns: list[str] | None = None,
                     prefetch: int = 2, shuffle_window: int | None = None, reuse_buffers: bool = True) -> BatchIterator:
        """Batches of ``hooks`` (default: all; globs such as ``resid.*`` allowed) as dicts of torch tensors.

        Each batch holds one ``(batch, *shape)`` tensor per hook in ``dtype`` (``"float32"`` default;
        ``None`` keeps the stored dtype), plus ``example_id``, ``position``, ``token_id`` (nulls as -1) and
        the metadata columns (strings as lists). With ``shuffle`` the order is a deterministic function
        of (seed, epoch, rank, world_size, shuffle_window); ranks get disjoint contiguous shares of the
        epoch. ``start`` resumes from a previous iterator's ``cursor``. Batch tensors that the caller has
        dropped entirely (no reference, view or numpy array left) are recycled for later batches;
        ``reuse_buffers=False`` turns that off.

        Example::

            it = ds.iter_batches("resid.3", batch_size=4096, shuffle=True, seed=1, epoch=0)
            for step, batch in enumerate(it):
                if step == 10:
                    saved = it.cursor
                    break
            rest = ds.iter_batches("resid.3", batch_size=4096, shuffle=True, seed=1, start=saved)
        """
        hooks = self.schema.resolve_hooks(hooks, self.storage.display())
        meta = self.schema.check_columns(columns, self.storage.display())
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        epoch, offset = self._start(start, seed, rank, world_size, epoch)
        if shuffle_window is None:
            row_bytes = sum(self.schema.hooks[h].row_bytes for h in hooks)
            # ~256 MiB of rows, at least a few batches: a bounded buffer that still mixes row groups.
            shuffle_window = max(4 * batch_size, (256 << 20) // max(row_bytes, 1))
        dtypes = {h: resolve_torch_dtype(dtype, self.schema.hooks[h].dtype) for h in hooks}
        return BatchIterator(source=self, hooks=hooks, meta=meta, batch_size=batch_size, shuffle=shuffle, seed=seed,
                             epoch=epoch, rank=rank, world_size=world_size, drop_last=drop_last, offset=offset,
                             dtypes=dtypes, prefetch=prefetch, window=int(shuffle_window), reuse=reuse_buffers)

    def _take_parts(self, rows: np.ndarray, names: list[str]) -> tuple[dict[str, list], np.ndarray]:
        """Each column's values of ``rows``, grouped by row group, and the permutation back to ``rows``' order."""
        groups = np.searchsorted(self._groups.start, rows, side="right") - 1
        parts: dict[str, list] = {c: [] for c in names}
        order = []
        for g in np.unique(groups):
            sel = np.nonzero(groups == g)[0]
            table = self._read_group(int(g), names).take(pa.array(rows[sel] - self._groups.start[g]))
            for c in names:
                spec = self.schema.hooks.get(c)
                parts[c].append(get_codec(spec.encoding).decode(spec, table.column(c)) if spec
                                else decode_metadata(table.column(c)))
            order.append(sel)
        inverse = np.empty(len(rows), dtype=np.int64)
        if order:
            inverse[np.concatenate(order)] = np.arange(len(rows))
        return parts, inverse

    def take(self, row_indices, hooks=None, columns: list[str] | None = None, dtype=None) -> dict:
        """Rows by global index (units in id order), as a dict of torch tensors in the order given."""
        import torch

        hooks = self.schema.resolve_hooks(hooks, self.storage.display())
        meta = self.schema.check_columns(columns, self.storage.display())
        rows = np.asarray(row_indices, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise IndexError(f"row indices must be in [0, {self.num_rows}); got {rows.min()}..{rows.max()}")
        parts, inverse = self._take_parts(rows, [*meta, *hooks])
        out = {}
        for h in hooks:
            spec = self.schema.hooks[h]
            arr = np.concatenate(parts[h]) if parts[h] else np.empty((0, spec.numel), DTYPES[spec.dtype].storage)
            t = storage_to_torch(np.ascontiguousarray(arr[inverse]), spec.dtype).reshape(len(rows), *spec.shape)
            out[h] = t if dtype is None else t.to(resolve_torch_dtype(dtype, spec.dtype))
        for c in meta:
            arr = _concat(parts[c])[inverse]
            out[c] = arr.tolist() if arr.dtype == object else torch.from_numpy(np.ascontiguousarray(arr))
        return out

    def read_unit_table(self, unit_index: int, columns: list[str] | None = None) -> pa.Table:
        """One unit's Parquet file as an Arrow table (tensor columns still encoded)."""
        unit = self.units[unit_index]
        return self.storage.call("read", unit.path, lambda: self.files.get(unit).read(columns), missing_ok=True)

    def to_numpy(self, hook: str, dtype: str | None = None, threads: int = 4) -> np.ndarray:
        """All rows of ``hook`` as one array of shape (rows, *shape).

        float16/float32/int32 come back in their stored dtype; bfloat16, which numpy lacks, comes back
        as exact float32 (``dtype`` casts explicitly).
        """
        spec = self.hook_spec(hook)
        codec = get_codec(spec.encoding)

        def one(ui: int) -> np.ndarray:
            return codec.decode(spec, self.read_unit_table(ui, [hook]).column(hook))

        with ThreadPoolExecutor(max(1, threads)) as pool:
            parts = list(pool.map(one, range(len(self.units))))
        arr = np.concatenate(parts) if parts else np.empty((0, spec.numel), DTYPES[spec.dtype].storage)
        arr = storage_to_numpy(arr, spec.dtype)
        if dtype is not None:
            arr = arr.astype(dtype)
        return arr.reshape(len(arr), *spec.shape)

    def metadata_table(self, columns: list[str] | None = None) -> pa.Table:
        """The non-tensor columns of every row, as one Arrow table."""
        cols = self.schema.check_columns(columns, self.storage.display())
        tables = [self.read_unit_table(ui, cols) for ui in range(len(self.units))]
        return pa.concat_tables(tables) if tables else self.schema.arrow_schema().empty_table().select(cols)

    def to_pandas(self, columns: list[str] | None = None):
        """The metadata columns as a pandas DataFrame (tensors stay out; use ``to_numpy``)."""
        return self.metadata_table(columns).to_pandas()

    # adapters live in shards.adapters: the core never imports Ray, datasets or torch.utils.data
    def to_ray(self, hooks=None, columns: list[str] | None = None, **read_kwargs):
        """A ``ray.data.Dataset``; tensor columns arrive as numpy arrays of shape (n, *shape)."""
        from shards.adapters.ray import to_ray

        return to_ray(self, hooks, columns, **read_kwargs)

    def to_hf(self, hooks=None, columns: list[str] | None = None):
        """A Hugging Face ``datasets.Dataset`` with tensor columns as fixed-length lists."""
        from shards.adapters.hf import to_hf

        return to_hf(self, hooks, columns)

    def torch_dataset(self, hooks=None, **iter_kwargs):
        """A torch ``IterableDataset`` of batches; see ``shards.adapters.torch.ActivationIterableDataset``."""
        from shards.adapters.torch import ActivationIterableDataset

        return ActivationIterableDataset(self, hooks, **iter_kwargs)

    def verify(self, check_checksums: bool = True):
        """Check every committed file against the manifest; see ``shards.verify``."""
        from shards.verify import verify_dataset

        return verify_dataset(self.uri, storage_options=self.storage_options, checksums=check_checksums)

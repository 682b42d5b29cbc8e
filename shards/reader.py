"""Reading datasets: batches as torch tensors, deterministic shuffling, random access."""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.dtypes import STORAGE_DTYPES, storage_to_float32, storage_to_torch
from shards.errors import UnknownHookError
from shards.manifest import STATS_DIR, read_manifest
from shards.pages import MappedFile
from shards.schema import FIXED_COLUMNS, DatasetSchema, HookSpec
from shards.shuffle import RankPlan, plan_rank, window_permutation
from shards.stats import HookStats
from shards.storage import Storage

log = logging.getLogger("actlake.reader")


def open_dataset(uri: str, storage_options: dict | None = None) -> Dataset:
    """Open a committed dataset for reading (only units named by its manifest are visible).

    Example::

        ds = open_dataset("s3://bucket/acts/minilm")
        for batch in ds.iter_batches(["resid.3"], batch_size=4096, shuffle=True, seed=0):
            x = batch["resid.3"]          # float32 tensor (4096, 384)
    """
    return Dataset(uri, storage_options)


def _single_array(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def decode_tensor(spec: HookSpec, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A tensor column as a (rows, numel) array of the storage dtype; no copy when possible."""
    arr = _single_array(column)
    n = len(arr)
    if spec.encoding == "binary":
        buf = arr.buffers()[1]
        width = spec.row_bytes
        raw = np.frombuffer(buf, dtype=np.uint8, count=n * width, offset=arr.offset * width)
        return raw.view(STORAGE_DTYPES[spec.dtype]).reshape(n, spec.numel)
    values = arr.flatten().to_numpy(zero_copy_only=False)
    if spec.dtype == "bfloat16":
        values = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return values.reshape(n, spec.numel)


def decode_metadata(column: pa.ChunkedArray | pa.Array, name: str):
    """A metadata column as numpy (nulls in integer columns become -1) or a list of str."""
    arr = _single_array(column)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return np.asarray(arr.to_pylist(), dtype=object)
    if arr.null_count and pa.types.is_integer(arr.type):
        arr = arr.fill_null(-1)
    return arr.to_numpy(zero_copy_only=False)


class BatchIterator:
    """Iterates batches of one rank for one epoch; ``cursor`` says where to resume."""

    def __init__(self, ds: Dataset, hooks: list[str], meta: list[str], batch_size: int, shuffle: bool,
                 seed: int, epoch: int, rank: int, world_size: int, drop_last: bool, offset: int,
                 dtype, prefetch: int, window: int, reuse: bool = True) -> None:
        self.ds, self.hooks, self.meta = ds, hooks, meta
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.dtype, self.prefetch, self.window = dtype, prefetch, window
        self.plan: RankPlan = plan_rank(ds._group_rows, shuffle, seed, epoch, rank, world_size)
        if drop_last:
            # Every rank yields the same number of full batches (DDP needs equal step counts).
            self.end = (ds.num_rows // world_size) // batch_size * batch_size
        else:
            self.end = self.plan.num_rows
        if not 0 <= offset <= self.end:
            raise ValueError(f"cursor offset {offset} is outside this rank's {self.end} rows")
        self.start = offset
        self.offset = offset
        self._buffers: dict = {}
        self._pool: dict[str, list] = {}
        self.reuse = reuse

    def __len__(self) -> int:
        remaining = self.end - self.start
        return remaining // self.batch_size if self.drop_last else -(-remaining // self.batch_size)

    @property
    def cursor(self) -> dict:
        """Resume point: pass as ``start=`` to ``iter_batches`` with the same arguments."""
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size}

    # The producer runs in a background thread: Parquet decoding, numpy take and
    # torch casts release the GIL, so reading overlaps the consumer's compute.
    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        try:
            for batch in self._batches():
                while not stop.is_set():
                    try:
                        out.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            out.put(exc)

    def __iter__(self) -> Iterator[dict]:
        if self.prefetch <= 0:
            for batch, n in self._batches():
                self.offset += n
                yield batch
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        t = threading.Thread(target=self._produce, args=(q, stop), daemon=True, name="actlake-prefetch")
        t.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, n = item
                self.offset += n
                yield batch
        finally:
            stop.set()
            t.join(timeout=10)

    def _batches(self):
        bs, w = self.batch_size, self.window
        pending: list[tuple[Window, np.ndarray]] = []
        have = 0
        pos = self.start
        while pos < self.end:
            k = pos // w
            lo, hi = k * w, min((k + 1) * w, self.plan.num_rows)
            data = self.ds._read_window(self.plan.window_slices(lo, hi), self.hooks, self.meta)
            perm = window_permutation(hi - lo, self.shuffle, self.seed, self.epoch, self.rank, k)
            idx = perm[pos - lo: min(hi, self.end) - lo]
            pos += len(idx)
            while len(idx):
                take = min(bs - have, len(idx))
                pending.append((data, idx[:take]))
                have += take
                idx = idx[take:]
                if have == bs:
                    yield self._assemble(pending, have), have
                    pending, have = [], 0
        if have and not self.drop_last:
            yield self._assemble(pending, have), have

    def _scratch(self, hook: str, n: int, which: int) -> np.ndarray:
        """Reused per-iterator buffers: memory touched once is far cheaper to write than fresh pages."""
        key = (hook, which)
        buf = self._buffers.get(key)
        spec = self.ds.schema.hooks[hook]
        if buf is None or buf.shape[0] < n:
            buf = self._buffers[key] = np.empty((max(n, self.batch_size), spec.numel), STORAGE_DTYPES[spec.dtype])
        return buf[:n]

    def _output_tensor(self, hook: str, shape: tuple, dtype):
        """A tensor for the next batch: a previously yielded one if nothing references it any more.

        Writing into freshly allocated memory costs a page fault per 4 KiB here
        (the cast of a 4096 x 768 batch into a new float32 tensor takes 4-5x longer
        than into a used one), so batches the consumer has dropped are recycled.
        A tensor is reused only when the pool holds the sole reference to it and
        to its storage (no view, numpy array or queued batch shares it).
        """
        import torch

        pool = self._pool.setdefault(hook, [])
        for t in pool:
            # references: the pool, the loop variable, getrefcount's argument
            if (sys.getrefcount(t) == 3 and t.shape == shape and t.dtype == dtype
                    and torch._C._storage_Use_Count(t.untyped_storage()._cdata) == 2):
                return t
        t = torch.empty(shape, dtype=dtype)
        if self.reuse and shape[0] == self.batch_size and len(pool) < self.prefetch + 4:
            pool.append(t)
        return t

    def _assemble(self, pieces: list[tuple[Window, np.ndarray]], n: int) -> dict:
        import torch

        out = {}
        for h in self.hooks:
            spec = self.ds.schema.hooks[h]
            target = self.dtype if self.dtype is not None else _torch_dtype(spec.dtype)
            t = self._output_tensor(h, (n, *spec.shape), target)
            flat = t.view(n, -1)
            a = 0
            for window, idx in pieces:
                rows = window.gather(h, idx, self._scratch(h, len(idx), 0), self._scratch(h, len(idx), 1))
                flat[a:a + len(idx)] = storage_to_torch(rows, spec.dtype)  # one vectorised cast
                a += len(idx)
            out[h] = t
        for c in self.meta:
            parts = [window.meta[c][idx] for window, idx in pieces]
            col = np.concatenate(parts) if len(parts) > 1 else parts[0]
            out[c] = col.tolist() if col.dtype == object else torch.from_numpy(np.ascontiguousarray(col))
        return out


class Window:
    """Rows of a few row-group slices; each hook's rows as a list of contiguous segments (no concatenation)."""

    def __init__(self, segments: dict[str, list[np.ndarray]], meta: dict[str, np.ndarray]):
        self.segments = segments
        self.meta = meta
        self.starts = {h: np.concatenate([[0], np.cumsum([len(p) for p in segs])]).astype(np.int64)
                       for h, segs in segments.items()}

    def gather(self, hook: str, idx: np.ndarray, scratch: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (window-relative) of ``hook``, in that order, via ``scratch`` into ``out``."""
        segs, starts = self.segments[hook], self.starts[hook]
        # Copy rows as raw bytes: page-cache views may be unaligned for their dtype, and numpy's
        # take on unaligned float16 falls back to a per-element loop (~10x slower).
        result, out, scratch = out, out.view(np.uint8), scratch.view(np.uint8)
        if len(segs) == 1:
            np.take(segs[0].view(np.uint8), idx, axis=0, out=out)
            return result
        # Group the wanted rows by segment (numpy's take copies whole rows at memcpy speed), then
        # restore the requested order with a second take: both into reused buffers.
        seg = np.searchsorted(starts, idx, side="right") - 1
        order = np.argsort(seg, kind="stable")
        bounds = np.searchsorted(seg[order], np.arange(len(segs) + 1))
        sorted_idx = idx[order]
        for s in range(len(segs)):
            a, b = bounds[s], bounds[s + 1]
            if a < b:
                np.take(segs[s].view(np.uint8), sorted_idx[a:b] - starts[s], axis=0, out=scratch[a:b])
        out[order] = scratch  # scatter back to the requested order (~3x faster than a second take)
        return result


def _slice_pages(pages: list[np.ndarray], start: int, stop: int) -> list[np.ndarray]:
    """Rows [start, stop) of a row group stored as consecutive page views."""
    out, pos = [], 0
    for p in pages:
        a, b = max(start, pos), min(stop, pos + len(p))
        if a < b:
            out.append(p[a - pos:b - pos])
        pos += len(p)
    return out


def _torch_dtype(name: str):
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


class Dataset:
    """A committed activation dataset (see ``open_dataset``)."""

    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        self.storage = Storage(uri, storage_options)
        self.manifest = read_manifest(self.storage)
        self.schema = DatasetSchema.from_json(self.manifest["schema"])
        self.units = sorted(self.manifest.get("units", []), key=lambda u: u["id"])
        g_unit, g_index, g_rows = [], [], []
        for ui, u in enumerate(self.units):
            for gi, r in enumerate(u["row_groups"]):
                g_unit.append(ui)
                g_index.append(gi)
                g_rows.append(r)
        self._group_unit = np.asarray(g_unit, dtype=np.int64)
        self._group_index = np.asarray(g_index, dtype=np.int64)
        self._group_rows = np.asarray(g_rows, dtype=np.int64)
        self._group_start = np.concatenate([[0], np.cumsum(self._group_rows)]).astype(np.int64)
        self._files: OrderedDict[int, pq.ParquetFile] = OrderedDict()
        self._files_lock = threading.Lock()
        self._stats: dict[str, HookStats] = {}
        self._mapped: dict[int, MappedFile] = {}
        self._pages: dict[tuple[int, str], list | None] = {}
        self.zero_copy = True  #: read local uncompressed tensors straight from the page cache

    def __getstate__(self) -> dict:  # for DataLoader workers and Ray tasks
        return {"uri": self.uri, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"], state["storage_options"])

    def __repr__(self) -> str:
        return (f"Dataset({self.storage.display()!r}, rows={self.num_rows}, units={len(self.units)}, "
                f"hooks={self.hooks})")

    # --- description -----------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self.schema.hooks)

    @property
    def columns(self) -> list[str]:
        """Non-tensor columns: example_id, position, token_id and the metadata columns."""
        return [*FIXED_COLUMNS, *self.schema.columns]

    @property
    def num_rows(self) -> int:
        return int(self._group_start[-1])

    def __len__(self) -> int:
        return self.num_rows

    def hook_spec(self, hook: str) -> HookSpec:
        self.schema.resolve_hooks([hook], self.storage.display())
        return self.schema.hooks[hook]

    def stats(self, hook: str) -> HookStats:
        """Merged statistics of ``hook`` over all committed units."""
        self.hook_spec(hook)
        if hook not in self._stats:
            s, _units = HookStats.from_npz_bytes(self.storage.get_bytes(f"{STATS_DIR}/{hook}.npz"))
            self._stats[hook] = s
        return self._stats[hook]

    # --- file access -------------------------------------------------------------
    def _file(self, unit_index: int) -> pq.ParquetFile:
        with self._files_lock:
            pf = self._files.get(unit_index)
            if pf is not None:
                self._files.move_to_end(unit_index)
                return pf
        rel = self.units[unit_index]["path"]
        if self.storage.is_local:
            pf = pq.ParquetFile(self.storage.path(rel), memory_map=True)
        else:
            pf = pq.ParquetFile(self.storage.open_input(rel))
        with self._files_lock:
            self._files[unit_index] = pf
            while len(self._files) > 16:
                self._files.popitem(last=False)
        return pf

    def _read_group(self, group: int, columns: list[str]) -> pa.Table:
        ui, gi = int(self._group_unit[group]), int(self._group_index[group])
        rel = self.units[ui]["path"]
        # use_threads=False: one thread decodes fixed-size binary pages ~3x faster here than the pool does
        return self.storage.retry("read", rel, lambda: self._file(ui).read_row_group(gi, columns=columns,
                                                                                      use_threads=False))

    def _mapped_pages(self, group: int, hook: str) -> list[np.ndarray] | None:
        """Page-cache views of ``hook``'s rows in ``group`` (see shards.pages), or None."""
        key = (group, hook)
        if key not in self._pages:
            pieces = None
            spec = self.schema.hooks[hook]
            if self.storage.is_local and spec.encoding == "binary" and self.zero_copy:
                ui = int(self._group_unit[group])
                mf = self._mapped.get(ui)
                if mf is None:
                    mf = self._mapped[ui] = MappedFile(self.storage.path(self.units[ui]["path"]),
                                                       self._file(ui).metadata)
                raw = mf.column_rows(int(self._group_index[group]), hook, spec.row_bytes)
                pieces = raw  # uint8 rows: a page payload need not be aligned for float16/32
            self._pages[key] = pieces
        return self._pages[key]

    def _read_window(self, slices, hooks: list[str], meta: list[str]) -> Window:
        """Rows of several row-group slices: tensor columns as views of the page cache (local,
        uncompressed) or of Arrow's decoded buffers, never concatenated."""
        segments: dict[str, list] = {h: [] for h in hooks}
        meta_parts: dict[str, list] = {c: [] for c in meta}
        cache: dict[int, pa.Table] = {}
        for s in slices:
            mapped = {h: self._mapped_pages(s.group, h) for h in hooks}
            cols = [*meta, *(h for h in hooks if mapped[h] is None)]
            part = None
            if cols:
                table = cache.get(s.group)
                if table is None:
                    cache.clear()
                    table = cache[s.group] = self._read_group(s.group, cols)
                part = table.slice(s.start, s.stop - s.start)
            for h in hooks:
                if mapped[h] is None:
                    segments[h].append(decode_tensor(self.schema.hooks[h], part.column(h)))
                else:
                    segments[h].append(_slice_pages(mapped[h], s.start, s.stop))
            for c in meta:
                meta_parts[c].append(decode_metadata(part.column(c), c))
        meta_cols = {c: (np.concatenate(p) if len(p) != 1 else p[0]) if p else np.empty(0)
                     for c, p in meta_parts.items()}
        # a slice may span several data pages: one segment per contiguous piece
        flat = {h: [p for seg in segs for p in (seg if isinstance(seg, list) else [seg])]
                for h, segs in segments.items()}
        return Window(flat, meta_cols)

    # --- public reading API --------------------------------------------------------
    def _check_columns(self, columns) -> list[str]:
        if columns is None:
            return self.columns
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise UnknownHookError(f"unknown columns {unknown}; this dataset has {self.columns}")
        return list(columns)

    def iter_batches(
        self,
        hooks=None,
        batch_size: int = 4096,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        start: dict | int | None = None,
        dtype="float32",
        columns: list[str] | None = None,
        prefetch: int = 2,
        shuffle_window: int | None = None,
        reuse_buffers: bool = True,
    ) -> BatchIterator:
        """Batches of ``hooks`` (default: all) as dicts of torch tensors.

        Each batch holds one ``(batch, *shape)`` tensor per hook in ``dtype``
        (``"float32"`` default; ``None`` keeps the stored dtype), plus
        ``example_id``, ``position``, ``token_id`` (nulls as -1) and the
        metadata columns (strings as lists). With ``shuffle`` the order is a
        deterministic function of (seed, epoch, rank, world_size,
        shuffle_window); ranks get disjoint contiguous shares of the epoch.
        ``start`` resumes from a previous iterator's ``cursor``. Batch tensors
        that the caller has dropped entirely (no reference, view or numpy array
        left) are recycled for later batches; ``reuse_buffers=False`` turns that off.

        Example::

            it = ds.iter_batches("resid.3", batch_size=4096, shuffle=True, seed=1, epoch=0)
            for step, batch in enumerate(it):
                if step == 10:
                    saved = it.cursor
                    break
            rest = ds.iter_batches("resid.3", batch_size=4096, shuffle=True, seed=1, start=saved)
        """
        import torch

        hooks = self.schema.resolve_hooks(hooks, self.storage.display())
        meta = self._check_columns(columns)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        offset = 0
        if isinstance(start, dict):
            for key, val in (("seed", seed), ("rank", rank), ("world_size", world_size)):
                if key in start and start[key] != val:
                    raise ValueError(f"cursor was saved with {key}={start[key]}, now {key}={val}: "
                                     "resume with the same arguments")
            epoch = int(start.get("epoch", epoch))
            offset = int(start.get("offset", 0))
        elif start is not None:
            offset = int(start)
        if shuffle_window is None:
            row_bytes = sum(self.schema.hooks[h].row_bytes for h in hooks)
            # ~256 MiB of rows, at least a few batches: a bounded buffer that still mixes row groups.
            shuffle_window = max(4 * batch_size, (256 << 20) // max(row_bytes, 1))
        return BatchIterator(self, hooks, meta, batch_size, shuffle, seed, epoch, rank, world_size,
                             drop_last, offset, dtype, prefetch, int(shuffle_window), reuse_buffers)

    def take(self, row_indices, hooks=None, columns: list[str] | None = None, dtype=None) -> dict:
        """Rows by global index (units in id order), as a dict of torch tensors in the order given."""
        import torch

        hooks = self.schema.resolve_hooks(hooks, self.storage.display())
        meta = self._check_columns(columns)
        rows = np.asarray(row_indices, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise IndexError(f"row indices must be in [0, {self.num_rows}); got {rows.min()}..{rows.max()}")
        groups = np.searchsorted(self._group_start, rows, side="right") - 1
        out_parts: dict[str, list] = {c: [] for c in [*hooks, *meta]}
        order = []
        for g in np.unique(groups):
            sel = np.nonzero(groups == g)[0]
            local = rows[sel] - self._group_start[g]
            table = self._read_group(int(g), [*meta, *hooks]).take(pa.array(local))
            for h in hooks:
                out_parts[h].append(decode_tensor(self.schema.hooks[h], table.column(h)))
            for c in meta:
                out_parts[c].append(decode_metadata(table.column(c), c))
            order.append(sel)
        inverse = np.empty(len(rows), dtype=np.int64)
        if order:
            inverse[np.concatenate(order)] = np.arange(len(rows))
        out = {}
        for c, parts in out_parts.items():
            if c in self.schema.hooks:
                spec = self.schema.hooks[c]
                empty = np.empty((0, spec.numel), STORAGE_DTYPES[spec.dtype])
                arr = (np.concatenate(parts) if parts else empty)[inverse]
                t = storage_to_torch(np.ascontiguousarray(arr), spec.dtype).reshape(len(rows), *spec.shape)
                out[c] = t if dtype is None else t.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
            else:
                arr = (np.concatenate(parts) if parts else np.empty(0))[inverse]
                out[c] = arr.tolist() if arr.dtype == object else torch.from_numpy(np.ascontiguousarray(arr))
        return out

    def read_unit_table(self, unit_index: int, columns: list[str] | None = None) -> pa.Table:
        """One unit's Parquet file as an Arrow table (tensor columns still encoded)."""
        rel = self.units[unit_index]["path"]
        return self.storage.retry("read", rel, lambda: self._file(unit_index).read(columns=columns))

    def to_numpy(self, hook: str, dtype: str | None = None, threads: int = 4) -> np.ndarray:
        """All rows of ``hook`` as one array of shape (rows, *shape).

        float16/float32 come back in their stored dtype; bfloat16, which numpy
        lacks, comes back as exact float32 (``dtype`` casts explicitly).
        """
        spec = self.hook_spec(hook)

        def one(ui: int) -> np.ndarray:
            return decode_tensor(spec, self.read_unit_table(ui, [hook]).column(hook))

        with ThreadPoolExecutor(max(1, threads)) as pool:
            parts = list(pool.map(one, range(len(self.units))))
        arr = np.concatenate(parts) if parts else np.empty((0, spec.numel), STORAGE_DTYPES[spec.dtype])
        if spec.dtype == "bfloat16":
            arr = storage_to_float32(arr, "bfloat16")
        if dtype is not None:
            arr = arr.astype(dtype)
        return arr.reshape(len(arr), *spec.shape)

    def metadata_table(self, columns: list[str] | None = None) -> pa.Table:
        """The non-tensor columns of every row, as one Arrow table."""
        cols = self._check_columns(columns)
        tables = [self.read_unit_table(ui, cols) for ui in range(len(self.units))]
        return pa.concat_tables(tables) if tables else self.schema.arrow_schema().empty_table().select(cols)

    def to_pandas(self, columns: list[str] | None = None):
        """The metadata columns as a pandas DataFrame (tensors stay out; use ``to_numpy``)."""
        return self.metadata_table(columns).to_pandas()

    # adapters live in shards.adapters to keep heavy imports lazy
    def to_ray(self, hooks=None, columns: list[str] | None = None, **read_kwargs):
        """A ``ray.data.Dataset``; tensor columns arrive as numpy arrays of shape (n, *shape)."""
        from shards.adapters import to_ray

        return to_ray(self, hooks, columns, **read_kwargs)

    def to_hf(self, hooks=None, columns: list[str] | None = None):
        """A Hugging Face ``datasets.Dataset`` with tensor columns as fixed-length float lists."""
        from shards.adapters import to_hf

        return to_hf(self, hooks, columns)

    def torch_dataset(self, hooks=None, **iter_kwargs):
        """A torch ``IterableDataset`` of batches; see ``shards.adapters.ActivationIterableDataset``."""
        from shards.adapters import ActivationIterableDataset

        return ActivationIterableDataset(self.uri, hooks, storage_options=self.storage_options, **iter_kwargs)

    def verify(self, check_checksums: bool = True):
        """Check every committed file against the manifest; see ``shards.verify``."""
        from shards.verify import verify_dataset

        return verify_dataset(self.uri, storage_options=self.storage_options, checksums=check_checksums)

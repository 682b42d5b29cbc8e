"""Iterating batches of one rank for one epoch: the read plan, windows of rows, reused buffers, the cursor."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from shards.dtypes import DTYPES, storage_to_torch
from shards.schema import HookSpec
from shards.shuffle import RankPlan, Slice, plan_rank, window_permutation


@dataclass(frozen=True)
class Cursor:
    """Where an iterator stands: rows of its rank's epoch already delivered, and the arguments that fix the order."""

    epoch: int
    offset: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    batch_size: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Cursor:
        return cls(**{k: int(v) for k, v in d.items() if k in cls.__dataclass_fields__})

    def check_matches(self, seed: int, rank: int, world_size: int) -> None:
        for key, val in (("seed", seed), ("rank", rank), ("world_size", world_size)):
            if getattr(self, key) != val:
                raise ValueError(f"cursor was saved with {key}={getattr(self, key)}, now {key}={val}: "
                                 "resume with the same arguments")


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
        # restore the requested order with a scatter: both into reused buffers.
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


class WindowSource(Protocol):
    """What the iterator needs from a dataset."""

    group_rows: np.ndarray

    def hook_spec(self, hook: str) -> HookSpec: ...

    def read_window(self, slices: list[Slice], hooks: list[str], meta: list[str]) -> Window: ...


class BatchBuffers:
    """Reused per-iterator memory: memory touched once is far cheaper to write than fresh pages.

    Writing into freshly allocated memory costs a page fault per 4 KiB here (the cast of a 4096 x 768
    batch into a new float32 tensor takes 4-5x longer than into a used one), so batches the consumer
    has dropped are recycled. A tensor is reused only when the pool holds the sole reference to it and
    to its storage (no view, numpy array or queued batch shares it).
    """

    def __init__(self, batch_size: int, keep: int, reuse: bool) -> None:
        self.batch_size, self.keep, self.reuse = batch_size, keep, reuse
        self._scratch: dict[tuple[str, int], np.ndarray] = {}
        self._pool: dict[str, list] = {}

    def scratch(self, spec: HookSpec, n: int, which: int) -> np.ndarray:
        key = (spec.name, which)
        buf = self._scratch.get(key)
        if buf is None or buf.shape[0] < n:
            buf = self._scratch[key] = np.empty((max(n, self.batch_size), spec.numel), DTYPES[spec.dtype].storage)
        return buf[:n]

    def output(self, hook: str, shape: tuple, dtype):
        import torch

        pool = self._pool.setdefault(hook, [])
        for t in pool:
            # references: the pool, the loop variable, getrefcount's argument
            if (sys.getrefcount(t) == 3 and t.shape == shape and t.dtype == dtype
                    and torch._C._storage_Use_Count(t.untyped_storage()._cdata) == 2):
                return t
        t = torch.empty(shape, dtype=dtype)
        if self.reuse and shape[0] == self.batch_size and len(pool) < self.keep:
            pool.append(t)
        return t


class BatchIterator:
    """Iterates batches of one rank for one epoch; ``cursor`` says where to resume."""

    def __init__(self, *, source: WindowSource, hooks: list[str], meta: list[str], batch_size: int, shuffle: bool,
                 seed: int, epoch: int, rank: int, world_size: int, drop_last: bool, offset: int,
                 dtypes: dict, prefetch: int, window: int, reuse: bool = True) -> None:
        self.source, self.hooks, self.meta = source, hooks, meta
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.dtypes, self.prefetch, self.window = dtypes, prefetch, window
        self.specs = {h: source.hook_spec(h) for h in hooks}
        self.plan: RankPlan = plan_rank(source.group_rows, shuffle, seed, epoch, rank, world_size)
        total = int(source.group_rows.sum())
        # drop_last: every rank yields the same number of full batches (DDP needs equal step counts)
        self.end = (total // world_size) // batch_size * batch_size if drop_last else self.plan.num_rows
        if not 0 <= offset <= self.end:
            raise ValueError(f"cursor offset {offset} is outside this rank's {self.end} rows")
        self.start = self.offset = offset
        self.buffers = BatchBuffers(batch_size, prefetch + 4, reuse)

    def __len__(self) -> int:
        remaining = self.end - self.start
        return remaining // self.batch_size if self.drop_last else -(-remaining // self.batch_size)

    @property
    def cursor(self) -> Cursor:
        """Resume point: pass as ``start=`` to ``iter_batches`` with the same arguments."""
        return Cursor(self.epoch, self.offset, self.seed, self.rank, self.world_size, self.batch_size)

    # The producer runs in a background thread: Parquet decoding, numpy take and torch casts
    # release the GIL, so reading overlaps the consumer's compute.
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
        # each iteration starts at the iterator's start, and so does its cursor: a second ``iter()`` used to start
        # again from the first batch while the cursor went on counting (resuming from it skipped rows)
        self.offset = self.start
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
            while (item := q.get()) is not None:
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
        have, pos = 0, self.start
        while pos < self.end:
            k = pos // w
            lo, hi = k * w, min((k + 1) * w, self.plan.num_rows)
            data = self.source.read_window(self.plan.window_slices(lo, hi), self.hooks, self.meta)
            idx = window_permutation(hi - lo, self.shuffle, self.seed, self.epoch, self.rank, k)[
                pos - lo: min(hi, self.end) - lo]
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

    def _assemble(self, pieces: list[tuple[Window, np.ndarray]], n: int) -> dict:
        import torch

        out = {}
        for h, spec in self.specs.items():
            t = self.buffers.output(h, (n, *spec.shape), self.dtypes[h])
            flat, a = t.view(n, -1), 0
            for window, idx in pieces:
                rows = window.gather(h, idx, self.buffers.scratch(spec, len(idx), 0),
                                     self.buffers.scratch(spec, len(idx), 1))
                flat[a:a + len(idx)] = storage_to_torch(rows, spec.dtype)  # one vectorised cast
                a += len(idx)
            out[h] = t
        for c in self.meta:
            parts = [window.meta[c][idx] for window, idx in pieces]
            col = np.concatenate(parts) if len(parts) > 1 else parts[0]
            out[c] = col.tolist() if col.dtype == object else torch.from_numpy(np.ascontiguousarray(col))
        return out

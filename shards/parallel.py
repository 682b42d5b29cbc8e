"""Thread pools shared by every open: object stores answer small reads in parallel, and starting threads per open
cost more than a small dataset's whole open."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[str, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def in_parallel(fn, items: list, pool: str = "meta") -> list:
    """``fn`` over ``items`` (results in order) in the shared pool ``pool`` (16 threads). A task must never wait on
    its own pool: callers that run inside one pool's tasks use another (``partials`` for units' own statistics,
    which metadata reads ask for)."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    with _LOCK:
        if pool not in _POOLS:
            _POOLS[pool] = ThreadPoolExecutor(16, thread_name_prefix=f"actlake-{pool}")
    return list(_POOLS[pool].map(fn, items))

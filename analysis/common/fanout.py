"""Running one function per hook: in this process, or as Ray tasks (one per hook, ``workers`` at a time);
``run_pending_hooks`` skips the hooks a killed run already finished."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from shards.progress import Progress
from shards.runtime import connect_ray

T = TypeVar("T")


def _call(fn: Callable[[str], T], hook: str) -> T:
    return fn(hook)


def map_hooks(fn: Callable[[str], T], hooks: list[str], *, workers: int = 1, address: str | None = None,
              cpus_per_task: float = 1, logger=None) -> dict[str, T]:
    """``{hook: fn(hook)}``. With ``workers > 1`` each call is a Ray task (``fn`` must be picklable: a
    function or a ``functools.partial`` of one; it goes to the object store once, however large its
    arguments), at most ``workers`` running at once."""
    import logging

    log = logger or logging.getLogger("actlake.analysis")
    with Progress(len(hooks), "hook", "hooks", log) as progress:
        if (workers <= 1 and not address) or not hooks:
            out = {}
            for h in hooks:
                out[h] = fn(h)
                progress.update()
            return out
        ray = connect_ray(address)
        task = ray.remote(num_cpus=cpus_per_task)(_call)
        fn_ref = ray.put(fn)
        pending, running, results = list(hooks), {}, {}
        while pending or running:
            while pending and len(running) < workers:
                h = pending.pop(0)
                running[task.remote(fn_ref, h)] = h
            done, _ = ray.wait(list(running), num_returns=1)
            results[running.pop(done[0])] = ray.get(done[0])
            progress.update()
        return {h: results[h] for h in hooks}


def run_pending_hooks(fn: Callable[[str], object], hooks: list[str], done: Callable[[str], bool], *,
                      workers: int = 1, address: str | None = None, threads: int = 0, logger=None,
                      verb: str = "done") -> list[str]:
    """``fn(hook)`` for every hook not ``done`` yet (``map_hooks``); the hooks it ran.

    In this process with no ``threads`` given, torch uses every core for the duration (Ray tasks set their own).
    """
    import logging
    import os

    import torch

    log = logger or logging.getLogger("actlake.analysis")
    todo = [h for h in hooks if not done(h)]
    if len(todo) < len(hooks):
        log.info("resuming: %d of %d hooks already %s", len(hooks) - len(todo), len(hooks), verb)
    before = torch.get_num_threads()
    if not threads and workers <= 1:
        torch.set_num_threads(os.cpu_count() or 1)
    try:
        map_hooks(fn, todo, workers=workers, address=address, logger=log)
    finally:
        torch.set_num_threads(before)
    return todo

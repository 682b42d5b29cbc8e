"""Killing a live extraction actor mid-job, for real (SIGKILL of its process), from a watcher thread."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

import psutil


def actor_pids() -> list[int]:
    """The extraction actors of this process's own Ray (its workers are this process's descendants), never those
    of another test run on the machine (a second pytest-xdist worker, a subprocess's driver)."""
    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmdline = p.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any("ExtractionActor" in part for part in cmdline):
            pids.append(p.pid)
    return sorted(pids)


@contextmanager
def kill_an_actor_after(store, commits: int, timeout: float = 120, poll: float = 0.02):
    """While the body runs, SIGKILL one extraction actor once ``commits`` units are committed at ``store``.

    Yields the list of killed pids (one entry once the kill happened).
    """
    killed: list[int] = []

    def watch() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            pids = actor_pids()
            if pids and len(store.list("data")) >= commits:  # unit files written (all but those in flight committed)
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(poll)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield killed
    finally:
        t.join()

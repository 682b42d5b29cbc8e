"""Short temporary folders for the local Rays that tests start in subprocesses (their ``RAY_TMPDIR``), removed with
everything Ray wrote in them (session folders, sockets, logs) whether the test passed or failed."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cluster.local import cluster_processes

#: what every folder made here starts with (tests/conftest.py checks that none is left behind)
PREFIX = "rt"


def remove_ray_tmpdir(path: str, wait_s: float = 15.0) -> None:
    """Remove ``path`` once no process names it: a raylet or worker of a killed driver that outlived it could
    still write there and recreate what was removed. One still up after ``wait_s`` belongs to this test's own
    Ray (the folder's random name is in its command line) and is killed."""
    deadline = time.monotonic() + wait_s
    while cluster_processes(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in cluster_processes(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def ray_tmpdir(prefix: str = PREFIX) -> Iterator[str]:
    """A new folder directly under /tmp (Ray's Unix socket paths must stay under 107 bytes, so pytest's long
    temporary paths will not do), removed on the way out."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        yield path
    finally:
        remove_ray_tmpdir(path)


def ray_tmpdir_for(request) -> str:
    """A folder as ``ray_tmpdir`` makes, removed when the test or fixture of ``request`` (pytest's) finishes."""
    path = tempfile.mkdtemp(prefix=PREFIX, dir="/tmp")
    request.addfinalizer(lambda: remove_ray_tmpdir(path))
    return path

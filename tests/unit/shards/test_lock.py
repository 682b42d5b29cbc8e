"""One writer at a time: a second writer is refused with a clear error; a dead writer's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import shards
from shards.errors import DatasetLockedError
from tests.helpers import HOOKS, held_on_another_host, unit_columns, write_dataset

HOLD = """
import sys, time, shards
from tests.helpers import HOOKS
w = shards.create_dataset(sys.argv[1], HOOKS, mode="append")
print("locked", flush=True)
time.sleep(120)
"""


def test_second_writer_in_process_refused(tmp_path):
    uri = str(tmp_path / "ds")
    w1 = shards.create_dataset(uri, HOOKS)
    with pytest.raises(shards.DatasetLockedError, match="being written by another writer"):
        shards.create_dataset(uri, HOOKS, mode="append")
    w1.write_unit(0, unit_columns(0, 5))
    w1.close()
    with shards.create_dataset(uri, HOOKS, mode="append") as w2:  # free again after close
        w2.write_unit(1, unit_columns(1, 5))
    assert shards.open_dataset(uri).num_rows == 10


def test_second_writer_process_refused_then_takes_over_after_kill(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=5)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, uri], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(root), env={**os.environ, "PYTHONPATH": os.path.dirname(root)})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(shards.DatasetLockedError, match=f"pid {proc.pid}"):
            shards.create_dataset(uri, HOOKS, mode="append")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.1)
    with shards.create_dataset(uri, HOOKS, mode="append") as w:  # the dead holder's lock is stale
        w.write_unit(1, unit_columns(1, 5))
    assert shards.open_dataset(uri).num_rows == 10


def test_break_lock(tmp_path):
    uri = str(tmp_path / "ds")
    w1 = shards.create_dataset(uri, HOOKS)
    with pytest.raises(DatasetLockedError, match=f"held by process {os.getpid()} on this host, which is alive"):
        shards.create_dataset(uri, HOOKS, mode="append", break_lock=True)  # a live holder here: never broken
    held_on_another_host(tmp_path / "ds")
    w2 = shards.create_dataset(uri, HOOKS, mode="append", break_lock=True)
    w2.write_unit(0, unit_columns(0, 4))
    w2.close()
    w1.abort()
    assert shards.open_dataset(uri).num_rows == 4

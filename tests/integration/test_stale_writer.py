"""A writer that only looks dead (issue 41, finding 1): paused past its lock's ttl (a real SIGSTOP), or watched from a
host whose clock runs ahead. Before format v4 the paused writer, once resumed, committed over the new holder:
rewrote its ``_log/vN.json`` and statistics files, so a reader pinned to that version read other rows, the latest
lacked the new holder's units, and ``verify`` passed. Now no version is written twice and no committed file is
rewritten: the resumed writer stops with an error naming what happened, having committed nothing more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shards
from shards.errors import DatasetLockedError, VersionConflictError
from shards.storage import Storage
from shards.versions import versions
from tests.helpers import HOOKS, unit_columns, write_dataset

ROOT = Path(__file__).resolve().parents[2]
TTL = 2.0


def _history(storage: Storage) -> dict[str, bytes]:
    """Every committed metadata file (log entries, checkpoints, statistics) by path, with its bytes."""
    out = {}
    for d in ("_log", "_checkpoints", "stats"):
        for f in storage.list(d):
            out[f"{d}/{f}"] = storage.get_bytes(f"{d}/{f}")
    return out


def _ids(uri: str, version: int | None = None) -> list[int]:
    ds = shards.open_dataset(uri, version=version)
    return sorted(ds.metadata_table(["example_id"]).column(0).to_pylist())


def _rows_of(units) -> list[int]:
    return sorted(i for u in units for i in range(u * 3, u * 3 + 3))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_paused_writer_taken_over_never_rewrites_the_new_holders_history(tmp_path, where, request):
    uri = str(tmp_path / "ds") if where == "local" else f"{request.getfixturevalue('s3_bucket')}/ds"
    write_dataset(uri, units=2, rows=3)
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.stale_writer", uri, str(TTL), str(ready),
                             str(go)], cwd=ROOT, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGSTOP)  # the writer, its heartbeat thread included, stalls
        time.sleep(TTL + 0.5)
        with shards.create_dataset(uri, HOOKS, mode="append", lock_ttl=60, commit_interval=0) as b:  # takes over
            for u in (60, 61):
                b.write_unit(u, unit_columns(u, 3))
            storage = Storage(uri)
            committed = _history(storage)
            pinned = {v.version: _ids(uri, v.version) for v in versions(uri)}
            os.kill(proc.pid, signal.SIGCONT)
            go.write_text("go")
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 3, err
            assert "lost the write lock" in err and "commits nothing more" in err
            b.write_unit(62, unit_columns(62, 3))  # the new holder goes on: its lock was never written over
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    now = _history(storage)
    assert {rel: now[rel] for rel in committed} == committed  # no committed file was rewritten
    for v, ids in pinned.items():  # readers pinned to every version read what they read
        assert _ids(uri, v) == ids
    assert _ids(uri) == _rows_of([0, 1, 50, 60, 61, 62])  # the stalled writer's last units never counted
    assert shards.verify_dataset(uri).ok


def test_a_paused_writer_closing_with_nothing_pending_leaves_the_successors_card(tmp_path):
    """Attack on round 3, F3: a writer taken over while paused, then closed with nothing pending, rewrote the
    successor's README card (its data_files named only its own units) and exited 0. It now fails and writes nothing."""
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=3)
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.stale_writer", uri, str(TTL), str(ready),
                             str(go), "close"], cwd=ROOT, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(TTL + 0.5)
        with shards.create_dataset(uri, HOOKS, mode="append", lock_ttl=60, commit_interval=0) as b:
            for u in (60, 61):
                b.write_unit(u, unit_columns(u, 3))
        card = (tmp_path / "ds" / "README.md").read_bytes()
        assert b"unit-000061" in card
        os.kill(proc.pid, signal.SIGCONT)
        go.write_text("go")
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err
        assert "lost the write lock" in err
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert (tmp_path / "ds" / "README.md").read_bytes() == card
    assert _ids(uri) == _rows_of([0, 1, 50, 60, 61])


def test_a_stale_writer_past_its_lock_check_loses_the_version_race(tmp_path, monkeypatch):
    """The narrow window a lock check cannot close: a writer stalled *after* checking its lock and before creating
    its version's log entry. Simulated by disabling its check (a pause cannot be aimed at that instruction): its
    log entry is created only if absent, so it loses to the version the new holder committed, writes nothing more,
    and rewrites nothing."""
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=3)
    a = shards.create_dataset(uri, HOOKS, mode="append", lock_ttl=TTL, commit_interval=1e9)
    a.write_unit(50, unit_columns(50, 3))  # committed by its record; the version comes at the next flush
    monkeypatch.setattr(a.lock, "check", lambda: None)  # A's lock check happened before it stalled
    a.lock._stop.set()  # and it stalls: no heartbeat
    time.sleep(TTL + 0.5)
    with shards.create_dataset(uri, HOOKS, mode="append", lock_ttl=60, commit_interval=0) as b:
        b.write_unit(60, unit_columns(60, 3))
        committed = _history(Storage(uri))
        latest = shards.open_dataset(uri).version
        with pytest.raises(VersionConflictError, match="was committed by another writer first"):
            a.flush()
        with pytest.raises(VersionConflictError):  # and it commits nothing more, whatever it is asked
            a.write_unit(51, unit_columns(51, 3))
        now = _history(Storage(uri))
        assert {rel: now[rel] for rel in committed} == committed
        assert shards.open_dataset(uri).version == latest
    # A's unit 50 has a record: the next writer (B, at its open) folded it exactly once
    assert _ids(uri) == _rows_of([0, 1, 50, 60])
    assert shards.verify_dataset(uri).ok


def test_a_host_whose_clock_runs_ahead_never_takes_a_live_writers_lock(tmp_path, monkeypatch):
    """The lock's heartbeat looks 400 s old to a host whose clock runs 400 s ahead; the holder beats while it is
    watched, so it is alive: refused, naming the clock."""
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=3)
    with shards.create_dataset(uri, HOOKS, mode="append", lock_ttl=TTL) as a:
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 400)  # this host's clock
        with pytest.raises(DatasetLockedError, match="clock is off"):
            shards.create_dataset(uri, HOOKS, mode="append", lock_ttl=TTL)
        monkeypatch.setattr(time, "time", real)
        a.write_unit(1, unit_columns(1, 3))  # the holder was never disturbed
    assert _ids(uri) == _rows_of([0, 1]) and shards.verify_dataset(uri).ok

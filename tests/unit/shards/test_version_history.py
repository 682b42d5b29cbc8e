"""Kept versions attacked (issue 24, items 13 and 15) and a live writer's lock (item 3), as format v3 keeps them
(a log entry per version). Each failed before: a damaged old version record made `versions`, `verify`, `verify
--repair` and `vacuum --keep 100` fail, each saying to run `verify --repair`; a garbage version file ahead of
manifest.json broke them after the next append; an old version rewritten consistently (a unit dropped, its counts
recomputed) passed `verify`; `vacuum --break-lock` beside a live writer on this host broke its lock and lost
committed units."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shards
from cluster.cli import main
from shards.errors import CorruptManifestError, DatasetLockedError
from shards.versionlog import CHECKPOINT_EVERY, log_path
from shards.versions import vacuum, versions
from tests.helpers import HOOKS, unit_columns, write_dataset

ROOT = Path(__file__).resolve().parents[3]


def _grow(uri: str, units: int) -> None:
    for u in range(units):
        with shards.create_dataset(uri, HOOKS, mode="append") as w:
            w.write_unit(100 + u, unit_columns(100 + u, 5))


def test_a_damaged_version_record_is_reported_and_repair_sets_it_aside(tmp_path, capsys):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=5)
    _grow(uri, CHECKPOINT_EVERY + 4)  # one-unit versions: no checkpoint after the damaged record
    latest = shards.open_dataset(uri)
    v3_rows = shards.open_dataset(uri, version=3).num_rows
    damaged = tmp_path / "ds" / log_path(4)
    damaged.write_bytes(damaged.read_bytes()[:50])
    listed = versions(uri)
    assert [v.version for v in listed if v.problem] == [4] and len(listed) == latest.version
    assert main(["versions", uri]) == 0 and "damaged" in capsys.readouterr().out
    report = shards.verify_dataset(uri)
    assert not report.ok and "damaged" in report.versions[log_path(4)]
    with pytest.raises(CorruptManifestError, match="damaged"):  # dropping 1-3 would start the history at 4
        vacuum(uri, keep=latest.version - 3)
    # nothing to drop: nothing removed, nothing read (an incremental vacuum costs what it removes)
    assert vacuum(uri, keep=100).removed_files == [] and damaged.exists()
    assert shards.open_dataset(uri).num_rows == latest.num_rows  # the root lists its changes: no log entry needed
    repaired = shards.verify_dataset(uri, repair=True)
    assert any("set aside" in r for r in repaired.repaired) and (tmp_path / "ds" / f"{log_path(4)}.damaged").exists()
    assert shards.verify_dataset(uri).ok and vacuum(uri, keep=100).removed_versions == []
    # the versions whose chain passed through version 4 are set aside too; a new version has a checkpoint of its
    # own, so that the versions after the repair never need them
    repaired_at = shards.open_dataset(uri).version
    assert [v.version for v in versions(uri)] == [1, 2, 3, repaired_at] and repaired_at > latest.version
    assert shards.open_dataset(uri, version=3).num_rows == v3_rows
    assert shards.open_dataset(uri).num_rows == latest.num_rows
    _grow(uri, 1)
    assert shards.verify_dataset(uri).ok and [v.version for v in versions(uri)][-2:] == [repaired_at,
                                                                                          repaired_at + 1]


def test_a_garbage_version_record_ahead_of_the_manifest(tmp_path):
    """Since format v4 the log entry after the root's version is a committed version (the root may lag): a garbage
    one is damaged data, refused by readers and writers alike (naming `verify --repair`), reported by `verify`, set
    aside by the repair; its units are in commit records and nothing is lost."""
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=5)
    ahead = shards.open_dataset(uri).version + 1
    (tmp_path / "ds" / log_path(ahead)).write_text("{garbage")
    for attempt in (lambda: shards.open_dataset(uri), lambda: _grow(uri, 1)):
        with pytest.raises(CorruptManifestError, match="verify --repair"):
            attempt()
    assert [v.version for v in versions(uri) if v.problem] == [ahead]
    report = shards.verify_dataset(uri)
    assert not report.ok and log_path(ahead) in report.versions
    shards.verify_dataset(uri, repair=True)
    assert (tmp_path / "ds" / f"{log_path(ahead)}.damaged").read_text() == "{garbage"
    _grow(uri, 1)
    assert shards.verify_dataset(uri).ok and [v.version for v in versions(uri) if v.problem] == []
    assert shards.open_dataset(uri).num_rows == 15


def test_a_rewritten_old_version_breaks_the_chain(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=5)
    _grow(uri, 2)
    assert shards.verify_dataset(uri).ok
    before = shards.open_dataset(uri, version=3).num_rows
    path = tmp_path / "ds" / log_path(3)
    d = json.loads(path.read_text())
    assert len(d["added"]) == 1
    gone = d["added"][0]
    d["added"] = []
    for name, less in (("units", 1), ("rows", gone["rows"]), ("bytes", gone["bytes"])):
        d["counts"][name] -= less
    path.write_text(json.dumps(d, separators=(",", ":")) + "\n")  # a unit dropped from history, consistently
    assert shards.open_dataset(uri, version=3).num_rows == before - 5  # readable: only the chain tells
    report = shards.verify_dataset(uri)
    assert not report.ok and "rewritten after it was committed" in report.versions[log_path(3)]



def test_a_log_entry_whose_unit_has_no_id_is_reported_as_damaged(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=5)
    _grow(uri, 1)
    path = tmp_path / "ds" / log_path(3)
    d = json.loads(path.read_text())
    del d["added"][0]["id"]
    path.write_text(json.dumps(d, separators=(",", ":")) + "\n")
    with pytest.raises(CorruptManifestError, match=r"v000000003\.json: a unit entry in `added` has no integer id.*"
                                                   r"verify --repair"):
        shards.open_dataset(uri, version=3)
    report = shards.verify_dataset(uri)
    assert not report.ok and "no integer id" in report.versions[log_path(3)]

WRITER = """
import sys, time, shards
from tests.helpers import HOOKS, unit_columns
w = shards.create_dataset(sys.argv[1], HOOKS, mode="append")
print("locked", flush=True)
for u in range(20, 26):
    w.write_unit(u, unit_columns(u, 5))
    w.flush()
    time.sleep(0.3)
w.close()
"""


def test_break_lock_never_breaks_a_live_writer_on_this_host(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=5)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, uri], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        time.sleep(0.5)
        with pytest.raises(DatasetLockedError, match=rf"held by process {writer.pid} on this host, which is alive"):
            vacuum(uri, keep=1, break_lock=True)
        assert main(["unlock", uri]) == 2
    finally:
        assert writer.wait(timeout=60) == 0
    assert shards.verify_dataset(uri).ok and shards.open_dataset(uri).num_rows == 35

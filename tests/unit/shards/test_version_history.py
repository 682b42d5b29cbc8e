"""Kept versions attacked (issue 24, items 13 and 15) and a live writer's lock (item 3). Each failed before: a
damaged old `_versions/vNNN.json` made `versions`, `verify`, `verify --repair` and `vacuum --keep 100` fail, each
saying to run `verify --repair`; a garbage version file ahead of manifest.json broke them after the next append; an
old version rewritten consistently (a unit dropped, its digest recomputed) passed `verify`; `vacuum --break-lock`
beside a live writer on this host broke its lock and lost committed units."""

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
from shards.layout import version_path
from shards.manifest import units_digest
from shards.versions import vacuum, versions
from tests.helpers import HOOKS, unit_columns, write_dataset

ROOT = Path(__file__).resolve().parents[3]


def _grow(uri: str, units: int) -> None:
    for u in range(units):
        with shards.create_dataset(uri, HOOKS, mode="append") as w:
            w.write_unit(100 + u, unit_columns(100 + u, 5))


def test_a_damaged_old_version_is_reported_and_repair_sets_it_aside(tmp_path, capsys):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=5)
    _grow(uri, 2)
    latest = shards.open_dataset(uri).version
    damaged = tmp_path / "ds" / version_path(2)
    damaged.write_bytes(damaged.read_bytes()[:50])
    listed = versions(uri)
    assert [v.version for v in listed if v.problem] == [2] and len(listed) == latest
    assert main(["versions", uri]) == 0 and "damaged" in capsys.readouterr().out
    report = shards.verify_dataset(uri)
    assert not report.ok and "damaged" in report.versions[version_path(2)]
    with pytest.raises(CorruptManifestError, match=r"kept version\(s\) \[2\] are damaged"):
        vacuum(uri, keep=100)
    repaired = shards.verify_dataset(uri, repair=True)
    assert any("set aside" in r for r in repaired.repaired)
    assert (tmp_path / "ds" / f"{version_path(2)}.damaged").exists()
    assert shards.verify_dataset(uri).ok and vacuum(uri, keep=100).removed_versions == []
    assert shards.open_dataset(uri, version=latest - 1).num_rows == shards.open_dataset(uri).num_rows - 5


def test_a_garbage_version_file_ahead_of_the_manifest(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=5)
    ahead = shards.open_dataset(uri).version + 1
    (tmp_path / "ds" / version_path(ahead)).write_text("{garbage")
    _grow(uri, 1)  # the next writer continues past it
    assert [v.version for v in versions(uri) if v.problem] == [ahead]
    assert not shards.verify_dataset(uri).ok
    shards.verify_dataset(uri, repair=True)
    assert shards.verify_dataset(uri).ok and [v.version for v in versions(uri) if v.problem] == []


def test_a_rewritten_old_version_breaks_the_chain(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=5)
    _grow(uri, 2)
    assert shards.verify_dataset(uri).ok
    before = shards.open_dataset(uri, version=3).num_rows
    path = tmp_path / "ds" / version_path(3)
    d = json.loads(path.read_text())
    d["units"] = d["units"][1:]  # a unit dropped from history, and everything made consistent again
    d["num_rows"] = sum(u["rows"] for u in d["units"])
    d["num_bytes"] = sum(u["bytes"] for u in d["units"])
    d["units_digest"] = units_digest(d["units"])
    path.write_text(json.dumps(d, indent=1) + "\n")
    assert shards.open_dataset(uri, version=3).num_rows == before - 5  # readable: only the chain tells
    report = shards.verify_dataset(uri)
    assert not report.ok and "rewritten after it was committed" in report.versions[version_path(3)]


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

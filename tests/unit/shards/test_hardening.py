"""Hostile storage and careless users (issue 9, items 3-11): each scenario of the attack run, made for real.

Faults that cannot be produced for real on this machine (a full disk, a store that fails every call) are
injected with monkeypatch, and the test says so.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

import shards
from cluster.cli import main
from shards.errors import (
    CorruptManifestError,
    DatasetLockedError,
    FormatVersionError,
    SchemaMismatchError,
    StorageError,
)
from shards.storage import Storage
from tests.helpers import (
    edit_manifest,
    held_on_another_host,
    listed_units,
    stats_file,
    unit_file,
    unit_rel,
    write_dataset,
)

HOOK = {"h": {"shape": [8], "dtype": "float32"}}


def cols(unit: int, rows: int = 10) -> dict:
    return {"example_id": np.arange(unit * rows, (unit + 1) * rows),
            "h": np.random.default_rng(unit).standard_normal((rows, 8)).astype(np.float32)}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- 3. statistics files and commit records ---
def test_truncated_stats_file_fails_verify_and_repair_rebuilds_it(tmp_path, capsys):
    uri = str(tmp_path / "ds")
    ds = write_dataset(uri, units=3, rows=20, hooks=HOOK)
    mean = ds.stats("h").mean.copy()
    p = stats_file(tmp_path / "ds", "h")
    p.write_bytes(p.read_bytes()[:40])
    report = shards.verify_dataset(uri)
    assert not report.ok and str(p.relative_to(tmp_path / "ds")) in report.stats
    assert main(["verify", uri]) == 1
    assert "bad statistics file" in capsys.readouterr().out
    with shards.create_dataset(uri, HOOK, mode="append") as w:  # a resume is not blocked: it rebuilds them
        w.write_unit(3, cols(3, 20))
    p = stats_file(tmp_path / "ds", "h")  # the new version's own file
    p.write_bytes(b"garbage")
    assert main(["verify", "--repair", uri]) == 0
    assert f"{p.relative_to(tmp_path / 'ds')} rebuilt" in capsys.readouterr().out
    ds = shards.open_dataset(uri)
    x = ds.to_numpy("h").astype(np.float64)
    np.testing.assert_allclose(ds.stats("h").mean, x.mean(0), rtol=1e-5, atol=1e-7)  # float32 chunk sums
    assert not np.allclose(ds.stats("h").mean, mean)  # the 4th unit is in
    assert shards.verify_dataset(uri).ok


def test_damaged_commit_record_fails_verify(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=10, hooks=HOOK)
    (tmp_path / "ds" / "_pending").mkdir(exist_ok=True)
    (tmp_path / "ds" / "_pending" / "unit-000002.json").write_text("{not json")  # a killed writer's, damaged
    report = shards.verify_dataset(uri)
    assert not report.ok and "_pending/unit-000002.json" in report.records


# --- 4. paths that escape the dataset ---
@pytest.mark.parametrize("path", ["../x.parquet", "/etc/passwd", "data/unit-000000.parquet"])
def test_manifest_unit_path_outside_the_format_is_refused(tmp_path, path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=10, hooks=HOOK)
    (tmp_path / "x.parquet").write_bytes((unit_file(tmp_path / "ds", 0)).read_bytes())
    def escape(m):
        listed_units(m)[1]["path"] = path  # an attacker who knows the format

    edit_manifest(tmp_path / "ds", escape)
    with pytest.raises(CorruptManifestError, match="unit 1 has path"):  # refused before a row is read
        shards.open_dataset(uri).metadata_table(["example_id"])
    with pytest.raises(CorruptManifestError):
        shards.verify_dataset(uri)


def test_orphan_commit_record_with_escaping_path_is_not_folded(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=10, hooks=HOOK)
    outside = tmp_path / "x.parquet"
    outside.write_bytes((unit_file(tmp_path / "ds", 0)).read_bytes())
    with shards.create_dataset(uri, HOOK, mode="append") as w:  # a pending record, as a killed writer leaves it
        rec = w.unit_writer().write(5, cols(5)).to_json()
    rec.update(id=5, path="../x.parquet")
    (tmp_path / "ds" / "_pending" / "unit-000005.json").write_text(json.dumps(rec))
    with shards.create_dataset(uri, HOOK, mode="append") as w:
        assert w.committed_units == {0}
    ds = shards.open_dataset(uri)
    assert [u.path for u in ds.units] == [unit_rel(tmp_path / "ds", 0)] and ds.num_rows == 10
    report = shards.verify_dataset(uri)
    assert "_pending/unit-000005.json" in report.records and "path" in report.records["_pending/unit-000005.json"]
    assert outside.exists()


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "x" * 201, "a\\b"])
def test_hook_and_column_names_are_checked_before_anything_is_written(tmp_path, name):
    with pytest.raises(SchemaMismatchError, match="not allowed|non-empty"):
        shards.create_dataset(str(tmp_path / "ds"), {name: {"shape": [4], "dtype": "float32"}})
    with pytest.raises(SchemaMismatchError, match="not allowed"):
        shards.create_dataset(str(tmp_path / "ds"), HOOK, columns={name: "string"})
    assert not (tmp_path / "ds").exists() and not (tmp_path / "x.npz").exists()


# --- 5. never delete a user's files ---
def test_overwrite_of_a_folder_that_is_no_dataset_deletes_nothing(tmp_path):
    root = tmp_path / "mine"
    for rel in ("data/precious.csv", "stats/notes.txt", "_commits/todo.md", "data/unit-000000.parquet.bak"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    before = tree(root)
    assert main(["demo", "--out", str(root), "--units", "2", "--rows-per-unit", "128", "--dim", "16",
                 "--layers", "2"]) == 0
    after = tree(root)
    assert all(after[k] == v for k, v in before.items())  # every file of the user is still there, unchanged
    assert shards.open_dataset(str(root)).num_rows == 256


def test_overwrite_of_a_dataset_removes_only_its_files(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=10, hooks=HOOK)
    (tmp_path / "ds" / "data" / "README.txt").write_text("mine")
    (tmp_path / "ds" / "stats" / "plot.png").write_bytes(b"png")
    with shards.create_dataset(uri, HOOK, mode="overwrite") as w:
        w.write_unit(0, cols(0))
    left = set(tree(tmp_path / "ds"))
    assert {"data/README.txt", "stats/plot.png"} <= left
    assert not {"_commits/unit-000001.json", "_commits/unit-000002.json"} & left  # old units are never folded
    assert shards.open_dataset(uri).num_rows == 10 and shards.verify_dataset(uri).ok


# --- 6. locks that cannot be parsed ---
@pytest.mark.parametrize("content", [b"", b"[]", b"{\"pid\": \"x\"", b"\x00\xff"])
def test_unparsable_lock_is_stale_with_a_warning(tmp_path, caplog, content):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=10, hooks=HOOK)
    (tmp_path / "ds" / "_lock.json").write_bytes(content)
    with shards.create_dataset(uri, HOOK, mode="append") as w:
        w.write_unit(1, cols(1))
    assert "cannot be parsed" in caplog.text
    assert shards.open_dataset(uri).num_rows == 20 and not (tmp_path / "ds" / "_lock.json").exists()


def test_live_lock_refusal_names_unlock_and_unlock_breaks_it(tmp_path, capsys):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=10, hooks=HOOK)
    holder = shards.create_dataset(uri, HOOK, mode="append")
    try:
        with pytest.raises(DatasetLockedError, match=f"actlake unlock {uri}"):
            shards.create_dataset(uri, HOOK, mode="append")
        assert main(["unlock", uri]) == 2  # its holder (this process) is alive on this host
        assert "which is alive" in capsys.readouterr().err
        held_on_another_host(tmp_path / "ds")
        assert main(["unlock", uri]) == 0
        assert "removed the lock of host" in capsys.readouterr().out
        with shards.create_dataset(uri, HOOK, mode="append") as w:
            w.write_unit(1, cols(1))
    finally:
        holder.abort()
    assert main(["unlock", uri]) == 0 and "not locked" in capsys.readouterr().out


def test_repair_with_break_lock(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=10, hooks=HOOK)
    holder = shards.create_dataset(uri, HOOK, mode="append")
    (tmp_path / "ds" / "data" / "unit-000009-0a1b2c3d.parquet").write_bytes(b"partial")
    try:
        with pytest.raises(DatasetLockedError):
            shards.verify_dataset(uri, repair=True)
        with pytest.raises(DatasetLockedError, match="which is alive"):
            shards.verify_dataset(uri, repair=True, break_lock=True)
        held_on_another_host(tmp_path / "ds")
        assert shards.verify_dataset(uri, repair=True, break_lock=True).removed == ["data/unit-000009-0a1b2c3d.parquet"]
    finally:
        holder.abort()


# --- 7. damaged manifests ---
@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"{\"format_version\": 1, \"units\": [", b"[1, 2]",
                                     b"{\"format_version\": 1}"])
def test_damaged_manifest_gives_one_clear_error_everywhere(tmp_path, capsys, content):
    uri = str(tmp_path / "ds")
    original = write_dataset(uri, units=2, rows=10, hooks=HOOK).manifest
    (tmp_path / "ds" / "manifest.json").write_bytes(content)
    for call in (lambda: shards.open_dataset(uri), lambda: shards.verify_dataset(uri),
                 lambda: shards.create_dataset(uri, HOOK, mode="append")):
        with pytest.raises(CorruptManifestError, match="manifest.json.*verify --repair"):
            call()
    for cmd in (["info", uri], ["verify", uri]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "manifest.json" in err and "Traceback" not in err
    assert main(["verify", "--repair", uri]) == 0
    # the log is what makes versions (format v4): the lost root is rebuilt from it, the dataset and its provenance
    # as they were (before: from the commit records, as a new dataset without provenance)
    assert "manifest.json rebuilt from the log (version 3: 2 units, as committed)" in capsys.readouterr().out
    ds = shards.open_dataset(uri)
    assert ds.num_rows == 20 and shards.verify_dataset(uri).ok
    assert ds.manifest.dataset_id == original.dataset_id and ds.manifest.config == original.config
    assert (tmp_path / "ds" / "manifest.json.damaged").read_bytes() == content


def test_missing_manifest_is_rebuilt_by_repair(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=10, hooks=HOOK)
    (tmp_path / "ds" / "manifest.json").unlink()
    with pytest.raises(shards.DatasetNotFoundError, match="verify --repair"):
        shards.open_dataset(uri)
    report = shards.verify_dataset(uri, repair=True)
    assert report.ok and shards.open_dataset(uri).num_rows == 30


# --- 8. a newer format ---
def test_newer_format_version_is_refused_not_overwritten(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=10, hooks=HOOK)
    edit_manifest(tmp_path / "ds", lambda m: m.update(format_version=5))  # this actlake writes version 4
    before = tree(tmp_path / "ds")
    for mode in ("append", "create", "overwrite"):
        with pytest.raises(FormatVersionError, match="format_version 5.*version 4"):
            shards.create_dataset(uri, HOOK, mode=mode)
    with pytest.raises(FormatVersionError):
        shards.open_dataset(uri)
    assert tree(tmp_path / "ds") == before


# --- 9. bad unit ids and colliding columns ---
@pytest.mark.parametrize("bad", [10**20, -1, 1.7, True, "3", None, np.float64(2.0)])
def test_bad_unit_ids_write_nothing(tmp_path, bad):
    uri = str(tmp_path / "ds")
    with shards.create_dataset(uri, HOOK) as w:
        w.write_unit(0, cols(0))
        with pytest.raises((TypeError, ValueError), match="unit id"):
            w.write_unit(bad, cols(1))
        w.write_unit(1, cols(1))
    assert sorted(n[:11] for n in os.listdir(tmp_path / "ds" / "data")) == ["unit-000000", "unit-000001"]
    with shards.create_dataset(uri, HOOK, mode="append") as w:  # later appends are not blocked
        w.write_unit(2, cols(2))
    # format v4: a unit's record is pending until a version names it, and kept only until the version after (so a
    # lost latest log entry can be rebuilt); its statistics stay in its file
    assert os.listdir(tmp_path / "ds" / "_pending") == ["unit-000002.json"]
    assert shards.verify_dataset(uri).ok


@pytest.mark.parametrize("column", ["example_id", "position", "token_id", "h"])
def test_metadata_column_colliding_with_a_fixed_column_or_hook_is_refused(tmp_path, column):
    with pytest.raises(SchemaMismatchError, match=f"metadata column '{column}' has the name of"):
        shards.create_dataset(str(tmp_path / "ds"), HOOK, columns={column: "int64"})
    assert not (tmp_path / "ds").exists()


# --- 10. repair racing a writer ---
def test_repair_computes_garbage_under_the_lock(tmp_path, monkeypatch):
    """The attack's race, forced as it forced it: a writer commits a unit while repair lists data/."""
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=10, hooks=HOOK)
    (tmp_path / "ds" / "data" / "unit-000009-0a1b2c3d.parquet").write_bytes(b"partial")
    real_list, raced = Storage.list, []

    def listing_with_a_writer(self, rel):
        names = real_list(self, rel)
        if rel == "data" and not raced:
            raced.append(True)
            try:  # the writer of unit 2 commits between the listing and the deletions
                with shards.create_dataset(uri, HOOK, mode="append", lock_ttl=300) as w:
                    w.write_unit(2, cols(2))
                raced.append("committed")
            except DatasetLockedError:
                raced.append("refused")
        return names

    monkeypatch.setattr(Storage, "list", listing_with_a_writer)
    report = shards.verify_dataset(uri, repair=True)
    monkeypatch.undo()
    assert report.removed == ["data/unit-000009-0a1b2c3d.parquet"]
    assert raced[-1] == "refused"  # repair held the lock while it listed
    assert shards.verify_dataset(uri).ok


# --- 11. errors that hide errors ---
def test_temp_file_removed_when_the_disk_fills(tmp_path, monkeypatch):
    """ENOSPC is injected (no full disk can be made here): the write fails, and close() fails again."""
    import builtins

    real_open = builtins.open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.f.close()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    def opener(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return FullDisk(f) if ".tmp-" in str(path) and "w" in mode else f

    st = Storage(str(tmp_path / "ds"))
    monkeypatch.setattr(builtins, "open", opener)
    with pytest.raises(StorageError, match="No space left"):
        st.put_bytes("manifest.json", b"{}")
    monkeypatch.undo()
    assert os.listdir(tmp_path / "ds") == []


def test_lock_release_failure_does_not_hide_the_real_error(tmp_path, monkeypatch):
    """A permanent outage is injected: every put and delete fails once the writer is open."""
    uri = str(tmp_path / "ds")
    w = shards.create_dataset(uri, HOOK)

    def down(*a, **k):
        raise StorageError("write failed for _lock.json: store unreachable")

    def put_down(self, rel, data, *args, **kwargs):
        raise StorageError(f"write failed for {rel}: store unreachable")

    monkeypatch.setattr(Storage, "put_bytes", put_down)
    monkeypatch.setattr(Storage, "delete", down)
    monkeypatch.setattr(Storage, "get_bytes", lambda self, rel: (_ for _ in ()).throw(
        StorageError(f"read failed for {rel}: store unreachable")))
    with pytest.raises(StorageError, match="read failed for _lock.json") as err:
        with w:  # the data file goes through open_output; the lock check before its commit record fails
            w.write_unit(0, cols(0))
    monkeypatch.undo()
    assert "write failed for _lock.json" not in str(err.value)  # the lock's release failure is logged, not raised


def test_empty_lock_left_by_a_failed_create_is_removed(tmp_path, monkeypatch):
    """ENOSPC while writing the lock's body is injected: no empty lock file, nor its temporary, stays behind."""
    import builtins

    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builtins, "open", lambda path, mode="r", *a, **k: Full(real_open(path, mode, *a, **k))
                        if "_lock.json.tmp-" in str(path) else real_open(path, mode, *a, **k))
    with pytest.raises(OSError):
        shards.create_dataset(str(tmp_path / "ds"), HOOK)
    monkeypatch.undo()
    assert not (tmp_path / "ds" / "_lock.json").exists() and os.listdir(tmp_path / "ds") == []
    with shards.create_dataset(str(tmp_path / "ds"), HOOK) as w:
        w.write_unit(0, cols(0))

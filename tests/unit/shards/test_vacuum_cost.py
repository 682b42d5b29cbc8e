"""``vacuum --keep N`` costs what it removes (issue 38): each log entry names the files of the units it removed or
replaced, so a vacuum reads the dropped versions' entries instead of listing and walking the whole dataset. It
must remove exactly what the full sweep (``--full``) removes, less garbage of killed writers."""

from __future__ import annotations

import shutil

import shards
from shards.storage import Storage
from shards.versions import vacuum, versions
from tests.helpers import HOOKS, unit_columns, write_dataset


def _history(uri: str) -> None:
    write_dataset(uri, units=4, rows=5)
    for step in range(6):  # appends, rewrites of committed units and a drop, one version each
        with shards.create_dataset(uri, HOOKS, mode="append") as w:
            w.write_unit(10 + step, unit_columns(10 + step, 5))
            if step % 2:
                w.write_unit(step // 2, unit_columns(step // 2, 5, seed=step))
            if step == 3:
                w.drop_units([11])


def _files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_lock" not in p.name}


def test_vacuum_from_the_log_removes_what_the_full_sweep_removes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _history(str(a))
    shutil.copytree(a, b)
    keep = 4
    kept = [v.version for v in versions(str(a))][-keep:]
    pinned = {v: sorted(shards.open_dataset(str(a), version=v).metadata_table(["example_id"]).column(0).to_pylist())
              for v in kept}
    ra, rb = vacuum(str(a), keep=keep), vacuum(str(b), keep=keep, full=True)
    assert ra.removed_versions == rb.removed_versions and ra.removed_files
    assert sorted(ra.removed_files) == sorted(rb.removed_files)
    assert _files(a) == _files(b)
    for v, ids in pinned.items():  # every kept version reads what it read
        assert sorted(shards.open_dataset(str(a), version=v).metadata_table(["example_id"]).column(0)
                      .to_pylist()) == ids
    assert shards.verify_dataset(str(a)).ok


def test_vacuum_of_one_version_lists_no_unit_file(tmp_path, monkeypatch):
    uri = str(tmp_path / "ds")
    _history(uri)
    listed = []
    real = Storage.list
    monkeypatch.setattr(Storage, "list", lambda self, rel="": listed.append(rel) or real(self, rel))
    n = len(versions(uri))
    report = vacuum(uri, keep=n - 1)
    assert len(report.removed_versions) == 1
    assert not [rel for rel in listed if rel.startswith("data")]  # the full sweep lists data/ (all units)


def test_repeated_vacuums_leave_no_statistics_file_behind(tmp_path):
    """Attack on issue 38, F7: a statistics file an earlier vacuum's first kept version still named was outside
    every later vacuum's range and stayed for ever."""
    a, b = tmp_path / "a", tmp_path / "b"
    with shards.create_dataset(str(a), HOOKS, commit_interval=1e9) as w:
        for u in range(40):  # 40 versions; statistics files every STATS_EVERY units or checkpoint
            w.write_unit(u, unit_columns(u, 2))
            w.flush()
        w.drop_units([3])  # a version that writes statistics files of its own
        for u in range(40, 60):
            w.write_unit(u, unit_columns(u, 2))
            w.flush()
    shutil.copytree(a, b)
    n = len(versions(str(a)))
    for keep in (n - 5, n - 30, 1):
        vacuum(str(a), keep=keep)
    vacuum(str(b), keep=1, full=True)
    assert sorted(p.name for p in (a / "stats").iterdir()) == sorted(p.name for p in (b / "stats").iterdir())
    assert shards.verify_dataset(str(a)).ok


def test_a_dry_run_names_exactly_what_the_vacuum_removes(tmp_path):
    """New user's finding (issue 38 round): `vacuum --dry-run` counted one file more than the vacuum removed: the
    leaf of the checkpoint the first kept version's chain starts from, which the checkpoint the vacuum gives that
    version lists again."""
    import shards
    from shards.versions import vacuum
    from tests.helpers import HOOKS, unit_columns, write_dataset

    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=2)
    vacuum(uri, keep=1)  # the latest gets a checkpoint of its own: one leaf
    for u in range(3, 9):  # one-unit versions on its chain
        with shards.create_dataset(uri, HOOKS, mode="append") as w:
            w.write_unit(u, unit_columns(u, 2))
    planned = vacuum(uri, keep=4, dry_run=True)
    done = vacuum(uri, keep=4)
    assert planned.removed_versions == done.removed_versions and len(done.removed_versions) >= 3
    assert sorted(planned.removed_files) == sorted(done.removed_files)
    assert shards.verify_dataset(uri).ok

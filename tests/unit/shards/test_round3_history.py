"""History that must stay exact (issue 41, findings 6, 7, 8, 9 and 13), each case as the attack run found it:

6. a unit rewritten under its id kept the statistics of its old copy (the mean was off, `verify` passed);
7. a log entry missing from the middle of the kept versions passed `verify` (and reading that version said it was
   "vacuumed (kept: 1..N)"); entries planted above the latest went unreported;
8. an overwrite stopped between removing the commit records and its first version left `verify` failing for good,
   and a later rebuild of the root from the records dropped units;
9. after `verify --repair --drop-damaged` and a rerun, `verify` still failed on a file only older versions name,
   without saying the latest was intact or that `vacuum` clears it;
13. a missing statistics file of the latest version was a traceback in every analysis.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import shards
import shards.versionlog
from cluster.cli import main
from shards.errors import CorruptDataError, CorruptManifestError
from shards.storage import Storage
from shards.versionlog import list_log_versions, log_path, read_log
from tests.helpers import HOOKS, unit_columns, write_dataset


def _mean(uri: str, hook: str = "mlp.0") -> np.ndarray:
    """The per-dimension mean of a hook over the dataset's rows, from the rows themselves."""
    ds = shards.open_dataset(uri)
    x = ds.take(np.arange(ds.num_rows))[hook].float().numpy().reshape(ds.num_rows, -1)
    return x.astype(np.float64).mean(axis=0)


# --- 6 -------------------------------------------------------------------------------------------------------------
def test_a_rewritten_unit_gets_statistics_of_its_new_rows(tmp_path):
    uri = str(tmp_path / "ds")
    with shards.create_dataset(uri, HOOKS, commit_interval=0) as w:
        for u in range(3):
            w.write_unit(u, unit_columns(u, 20))
        first = w.manifest.stats_files
        w.write_unit(1, unit_columns(1, 20, seed=7))  # "rewriting a unit id replaces it"
        assert w.manifest.stats_files != first  # this version wrote statistics of its own rows
    assert np.allclose(shards.open_dataset(uri).stats("mlp.0").mean, _mean(uri), atol=1e-9)
    assert shards.verify_dataset(uri).ok


def test_verify_reports_statistics_of_a_unit_s_old_copy_as_stale(tmp_path):
    from shards.partials import all_partials, merge
    from shards.unit_table import IdDigest

    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    with shards.create_dataset(uri, HOOKS, commit_interval=0) as w:
        for u in range(3):
            w.write_unit(u, unit_columns(u, 20))
        before = list(w.manifest.units)
        old = merge({}, all_partials(Storage(uri), before, w.schema))
        w.write_unit(1, unit_columns(1, 20, seed=7))
        latest = dict(w.manifest.stats_files)
        assert not w.manifest.stats_pending
    for h, p in latest.items():  # what the writer wrote before the fix: the statistics of the old copy
        (root / p).write_bytes(old[h].to_npz_bytes(IdDigest.of_units(before)))
    report = shards.verify_dataset(uri)
    assert not report.ok and set(report.stats) == set(latest.values())
    assert all("other copies of the units" in p for p in report.stats.values())
    shards.verify_dataset(uri, repair=True)  # rebuilt from the commit records: the new rows'
    assert shards.verify_dataset(uri).ok
    assert np.allclose(shards.open_dataset(uri).stats("mlp.0").mean, _mean(uri), atol=1e-9)


# --- 7 -------------------------------------------------------------------------------------------------------------
def test_a_log_entry_missing_from_the_middle_fails_verify_and_reading_it_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(shards.versionlog, "CHECKPOINT_MAX", 2)  # checkpoints every few versions
    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    with shards.create_dataset(uri, HOOKS, commit_interval=0) as w:
        for u in range(6):
            w.write_unit(u, unit_columns(u, 5))
    st = Storage(uri)
    # a version with a checkpoint of its own whose predecessor is not the first: it reads without that one, so
    # only the chain can tell that the predecessor's record is gone
    v = next(v for v in list_log_versions(st)[2:] if read_log(st, v)[0].checkpoint == v)
    rows = shards.open_dataset(uri, version=v).num_rows
    (root / log_path(v - 1)).unlink()
    report = shards.verify_dataset(uri)
    assert not report.ok and "missing" in report.versions[log_path(v - 1)]
    with pytest.raises(CorruptManifestError, match=f"version {v - 1} is missing .* before and after it are kept"):
        shards.open_dataset(uri, version=v - 1)
    assert shards.open_dataset(uri, version=v).num_rows == rows  # the others still read


def test_log_entries_planted_above_the_latest_fail_verify(tmp_path):
    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    write_dataset(uri, units=2, rows=5)
    latest = shards.open_dataset(uri).version
    planted = json.loads((root / log_path(latest)).read_text())
    planted.update(version=latest + 5, base=latest + 4)  # not after the latest: a gap
    (root / log_path(latest + 5)).write_text(json.dumps(planted))
    assert shards.open_dataset(uri).version == latest  # readers go on to the next version only
    report = shards.verify_dataset(uri)
    assert not report.ok and "not part of the history" in report.versions[log_path(latest + 5)]
    shards.verify_dataset(uri, repair=True)
    assert shards.verify_dataset(uri).ok and (root / f"{log_path(latest + 5)}.damaged").exists()


# --- 8 -------------------------------------------------------------------------------------------------------------
class Killed(BaseException):
    """The overwriting process ending at this step (simulated: SIGKILL cannot be aimed at one write)."""


@pytest.mark.parametrize("step", ["_checkpoints/", "_log/", "manifest.json", "_pending/"])
def test_an_overwrite_stopped_at_any_step_is_undone_or_finished_by_repair(tmp_path, monkeypatch, step):
    """Stopped before its first version is committed (``_log/``), nothing changed; after, the new (empty) dataset
    is committed and the old records left (a killed writer's, pending) are of a replaced dataset: never folded,
    removed by the repair."""
    uri = str(tmp_path / "ds")
    old = write_dataset(uri, units=6, rows=5).manifest
    with shards.create_dataset(uri, HOOKS, mode="append") as w:  # a record no version names yet (a killed job's)
        w.unit_writer().write(7, unit_columns(7, 5))
    assert shards.open_dataset(uri).num_rows == 30
    real_put, real_create, real_delete = Storage.put_bytes, Storage.create_exclusive, Storage.delete

    def die(rel):
        if rel.startswith(step):
            raise Killed(rel)

    monkeypatch.setattr(Storage, "put_bytes",
                        lambda self, rel, data, *a, **k: die(rel) or real_put(self, rel, data, *a, **k))
    monkeypatch.setattr(Storage, "create_exclusive", lambda self, rel, data: die(rel) or real_create(self, rel, data))
    monkeypatch.setattr(Storage, "delete", lambda self, rel: (die(rel) if rel.startswith("_pending/") else None)
                        or real_delete(self, rel))
    with pytest.raises(Killed):
        shards.create_dataset(uri, HOOKS, columns={"label": "string", "score": "float64"}, mode="overwrite")
    monkeypatch.undo()
    committed = step in ("manifest.json", "_pending/")  # its first version's log entry exists
    ds = shards.open_dataset(uri)
    assert ds.num_rows == (0 if committed else 30)
    assert ds.manifest.dataset_id != old.dataset_id if committed else ds.manifest.dataset_id == old.dataset_id
    report = shards.verify_dataset(uri)
    assert report.ok, report.lines()
    if committed:  # the old dataset's pending record: garbage, not "uncommitted" (never folded)
        assert "_pending/unit-000007.json" in report.garbage and not report.uncommitted_records
    shards.verify_dataset(uri, repair=True)
    with shards.create_dataset(uri, HOOKS, mode="append") as w:  # nothing of the old dataset is folded
        w.write_unit(9, unit_columns(9, 5))
    ds = shards.open_dataset(uri)
    assert ds.num_rows == (5 if committed else 40) and shards.verify_dataset(uri).ok  # not replaced: 7 folded
    assert shards.open_dataset(uri, version=old.version).num_rows == 30  # the replaced version stays readable


def test_a_lost_root_is_rebuilt_from_the_log_with_every_unit(tmp_path):
    """Before: rebuilt from the commit records, which an interrupted overwrite had partly removed (130 -> 112 rows);
    now the log, which makes the versions, gives the latest version back whole."""
    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    before = write_dataset(uri, units=13, rows=10).manifest
    with shards.create_dataset(uri, HOOKS, mode="append") as w:  # the records of versions before the latest go
        w.write_unit(13, unit_columns(13, 10))
    assert [p.name for p in (root / "_pending").iterdir()] == ["unit-000013.json"]
    (root / "manifest.json").unlink()
    report = shards.verify_dataset(uri, repair=True)
    assert any("rebuilt from the log" in r for r in report.repaired)
    ds = shards.open_dataset(uri)
    assert ds.num_rows == 140 and ds.manifest.dataset_id == before.dataset_id


# --- 9 -------------------------------------------------------------------------------------------------------------
def test_after_drop_damaged_and_a_rerun_verify_passes_and_names_the_old_versions(tmp_path, capsys):
    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    write_dataset(uri, units=3, rows=5)
    bad = root / shards.open_dataset(uri).units[1].path
    bad.write_bytes(bad.read_bytes()[:-40])  # damaged on disk
    shards.verify_dataset(uri, repair=True, drop_damaged=True)
    with shards.create_dataset(uri, HOOKS, mode="append") as w:  # the rerun writes unit 1 again
        w.write_unit(1, unit_columns(1, 5))
    assert main(["verify", uri]) == 0
    out = capsys.readouterr().out
    assert bad.name in out and "the latest version is intact" in out and "actlake vacuum" in out
    assert main(["vacuum", uri, "--keep", "1"]) == 0 and not bad.exists()
    capsys.readouterr()
    assert main(["verify", uri]) == 0 and bad.name not in capsys.readouterr().out


def test_a_damaged_file_of_an_older_version_still_fails_verify_unless_its_unit_was_dropped(tmp_path):
    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    write_dataset(uri, units=2, rows=5)
    old = root / shards.open_dataset(uri).units[0].path
    with shards.create_dataset(uri, HOOKS, mode="append") as w:
        w.write_unit(0, unit_columns(0, 5, seed=3))  # rewritten (a retry): the old copy is an older version's
    old.write_bytes(b"garbage")
    report = shards.verify_dataset(uri)
    assert not report.ok and str(old.relative_to(root)) in report.bad


# --- 13 ------------------------------------------------------------------------------------------------------------
def test_a_missing_statistics_file_names_the_file_and_the_repair(tmp_path, capsys):
    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    write_dataset(uri, units=2, rows=5)
    path = shards.open_dataset(uri).manifest.stats_files["resid.0"]
    (root / path).unlink()
    with pytest.raises(CorruptDataError, match=f"{path} is missing.*verify --repair"):
        shards.open_dataset(uri).stats("resid.0")
    assert main(["stats", "--data", uri, "--hooks", "resid.0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert path in err and "verify --repair" in err and "Traceback" not in err
    shards.verify_dataset(uri, repair=True)
    assert shards.open_dataset(uri).stats("resid.0").count == 10


def test_the_writer_never_skips_a_version_number(tmp_path):
    """Format v4: the log entries of a dataset are consecutive (each the one after its base), which is what lets
    `verify` tell a missing entry from a number never used, and readers go on from a lagging root."""
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=5, rows=2)
    st = Storage(uri)
    logged = list_log_versions(st)
    assert logged == list(range(1, logged[-1] + 1))
    assert all(read_log(st, v)[0].base == v - 1 for v in logged[1:])

"""``verify --since VERSION`` (issue 38): checks the versions after VERSION -- their chain back to it, the files they
added, the latest's statistics and the root -- and nothing before, so its cost is what changed since."""

from __future__ import annotations

import json

import pytest

import shards
from cluster.cli import main
from shards.versionlog import log_path
from tests.helpers import HOOKS, unit_columns, write_dataset


def _grown(tmp_path) -> tuple[str, object, int]:
    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    write_dataset(uri, units=3, rows=5)
    since = shards.open_dataset(uri).version
    for u in (3, 4, 5):  # three more versions, one unit each
        with shards.create_dataset(uri, HOOKS, mode="append") as w:
            w.write_unit(u, unit_columns(u, 5))
    return uri, root, since


def _flip(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_clean_dataset_passes_and_only_the_new_files_are_read(tmp_path, capsys):
    uri, root, since = _grown(tmp_path)
    report = shards.verify_dataset(uri, since=since)
    assert report.ok and report.units_checked == 3 and report.versions_checked == [since + 1, since + 2, since + 3]
    _flip(root / shards.open_dataset(uri).units[0].path)  # a file of VERSION and before: not its business
    assert shards.verify_dataset(uri, since=since).ok and not shards.verify_dataset(uri).ok
    capsys.readouterr()
    assert main(["verify", uri, "--since", str(since)]) == 0
    assert "3 units checked in 3 versions" in capsys.readouterr().out


def test_a_flipped_byte_in_a_file_added_after_version_fails(tmp_path):
    uri, root, since = _grown(tmp_path)
    bad = shards.open_dataset(uri).units[4].path
    _flip(root / bad)
    report = shards.verify_dataset(uri, since=since)
    assert not report.ok and any("checksum" in p for p in report.bad[bad])


def test_a_rewritten_log_entry_after_version_fails(tmp_path):
    uri, root, since = _grown(tmp_path)
    path = root / log_path(since + 1)
    entry = json.loads(path.read_text())
    entry["updated"] = "2020-01-01T00:00:00Z"  # consistent, parses: only the next entry's digest of it tells
    path.write_text(json.dumps(entry))
    report = shards.verify_dataset(uri, since=since)
    assert not report.ok and "rewritten after it was committed" in report.versions[log_path(since + 1)]


def test_a_missing_entry_and_a_stale_root_fail(tmp_path):
    uri, root, since = _grown(tmp_path)
    (root / log_path(since + 2)).unlink()
    assert log_path(since + 2) in shards.verify_dataset(uri, since=since).versions
    uri2, root2, since2 = _grown(tmp_path / "b")
    m = json.loads((root2 / "manifest.json").read_text())
    m["units"]["digest"] = "0" * 32  # reads on its own; only the comparison with the latest entry tells
    (root2 / "manifest.json").write_text(json.dumps(m))
    assert "manifest.json" in shards.verify_dataset(uri2, since=since2).versions


def test_bad_since_is_refused_before_any_work(tmp_path, capsys):
    uri, _root, _since = _grown(tmp_path)
    assert main(["verify", uri, "--since", "999"]) == 2
    assert "latest version" in capsys.readouterr().err
    assert main(["verify", uri, "--since", "1", "--repair"]) == 2
    with pytest.raises(Exception, match="latest version"):
        shards.verify_dataset(uri, since=999)


def test_after_a_vacuum_since_an_older_version_checks_what_is_kept(tmp_path):
    """New user's finding: `verify --since 2` after `vacuum --keep 3` reported the vacuumed entries as damage."""
    from shards.versions import vacuum

    uri, root, since = _grown(tmp_path)
    latest = shards.open_dataset(uri).version
    vacuum(uri, keep=3)
    oldest = latest - 2
    for s in (0, 1, since, oldest - 1, oldest, latest):
        report = shards.verify_dataset(uri, since=s)
        assert report.ok, (s, report.lines())
    _flip(root / shards.open_dataset(uri).units[5].path)  # added by the latest version
    assert not shards.verify_dataset(uri, since=0).ok
    # the oldest kept version's own files are checked when --since names a vacuumed version (attack on issue 38:
    # its unit was skipped and the check said OK)
    oldest_unit = root / shards.open_dataset(uri, version=oldest).units[3].path
    _flip(oldest_unit)
    assert not shards.verify_dataset(uri, since=1).ok


@pytest.mark.parametrize("damage", ["delete", "flip"])
def test_a_missing_or_damaged_leaf_of_the_latest_unit_list_fails(tmp_path, damage):
    """Attack on issue 38: with the root read lazily, `verify --since` no longer read the unit list, and passed a
    dataset whose checkpoint leaf was gone (open_dataset could not read it)."""
    from shards.versions import vacuum

    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    write_dataset(uri, units=4, rows=3)
    vacuum(uri, keep=1)  # the latest gets a checkpoint of its own: one leaf of its units
    since = shards.open_dataset(uri).version
    for u in (10, 11):
        with shards.create_dataset(uri, HOOKS, mode="append") as w:
            w.write_unit(u, unit_columns(u, 2))
    assert shards.verify_dataset(uri, since=since).ok
    (leaf,) = (root / "_checkpoints" / "leaves").glob("*.parquet")
    if damage == "delete":
        leaf.unlink()
        report = shards.verify_dataset(uri, since=since)
        assert not report.ok and "missing" in report.versions[f"_checkpoints/leaves/{leaf.name}"]
    else:
        _flip(leaf)
        report = shards.verify_dataset(uri, since=since - 1)  # written by version `since`: read
        assert not report.ok and "damaged" in report.versions[f"_checkpoints/leaves/{leaf.name}"]
        assert not shards.verify_dataset(uri, since=since).ok, "the latest's pending records read the unit list"

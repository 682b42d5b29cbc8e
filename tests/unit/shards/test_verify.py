"""verify finds corrupted units by file name; --repair removes only garbage."""

from __future__ import annotations

import pytest

import shards
from cluster.cli import main
from tests.helpers import HOOKS, unit_columns, unit_file, unit_rel, write_dataset


def flip_byte(path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_clean_dataset_verifies(tmp_path, capsys):
    write_dataset(str(tmp_path / "ds"), units=3, rows=20)
    assert shards.verify_dataset(str(tmp_path / "ds")).ok
    assert main(["verify", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "3 units checked in 4 versions (1..4), OK" in out  # every kept version


@pytest.mark.parametrize("where", [0.3, 0.6, 0.999])
def test_flipped_byte_names_the_unit(tmp_path, capsys, where):
    root = tmp_path / "ds"
    write_dataset(str(root), units=5, rows=40)
    flip_byte(unit_file(root, 3), where)
    report = shards.verify_dataset(str(root))
    rel = unit_rel(root, 3)
    assert list(report.bad) == [rel]
    assert any("checksum" in p for p in report.bad[rel])
    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert rel in out and "FAILED: 1 bad unit" in out
    assert "unit-000002" not in out


def test_missing_and_truncated_units(tmp_path):
    root = tmp_path / "ds"
    write_dataset(str(root), units=3, rows=10)
    (unit_file(root, 0)).unlink()
    p = unit_file(root, 2)
    p.write_bytes(p.read_bytes()[:-100])
    report = shards.verify_dataset(str(root), checksums=False)
    assert report.bad[unit_rel(root, 0)] == ["missing"]
    assert any("size" in x for x in report.bad[unit_rel(root, 2)])
    assert unit_rel(root, 1) not in report.bad


def test_repair_removes_only_uncommitted_files(tmp_path, capsys):
    root = tmp_path / "ds"
    write_dataset(str(root), units=2, rows=10)
    kept = sorted(p.name for p in (root / "data").iterdir())
    (root / "data" / "unit-000007-0a1b2c3d.parquet").write_bytes(b"partial")  # a crashed writer's leftover
    (root / "data" / "unit-000001.parquet.tmp-0123456789ab").write_bytes(b"partial")
    report = shards.verify_dataset(str(root))
    assert report.ok
    assert sorted(report.garbage) == ["data/unit-000001.parquet.tmp-0123456789ab", "data/unit-000007-0a1b2c3d.parquet"]
    assert main(["verify", "--repair", str(root)]) == 0
    assert "removed" in capsys.readouterr().out
    assert sorted(p.name for p in (root / "data").iterdir()) == kept
    assert shards.open_dataset(str(root)).num_rows == 20


def test_repair_refuses_while_a_writer_is_active(tmp_path):
    root = tmp_path / "ds"
    write_dataset(str(root), units=1, rows=10)
    (root / "data" / "unit-000005-0a1b2c3d.parquet").write_bytes(b"in flight")
    w = shards.create_dataset(str(root), HOOKS, mode="append")
    with pytest.raises(shards.DatasetLockedError, match="being written by another writer"):
        shards.verify_dataset(str(root), repair=True)
    w.write_unit(5, unit_columns(5, 10))
    w.close()
    assert shards.verify_dataset(str(root), repair=True).ok
    assert shards.open_dataset(str(root)).num_rows == 20

"""Format v2 versions: snapshot isolation, reading old versions, verify over every version, vacuum, v1 upgrade."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import shards
from cluster.cli import main
from shards.errors import DatasetLockedError, DatasetNotFoundError
from shards.manifest import FORMAT_VERSION
from shards.versions import vacuum, versions
from tests.helpers import HOOKS, unit_columns, unit_file, write_dataset

V1 = Path(__file__).resolve().parents[2] / "historical_datasets" / "v1"


def all_bytes(ds: shards.Dataset) -> bytes:
    """Every tensor byte and example id the dataset object reads."""
    ids = np.asarray(ds.metadata_table(["example_id"]).column(0).to_pylist()).tobytes()
    return b"".join(ds.to_numpy(h).tobytes() for h in ds.hooks) + ids


def test_a_reader_keeps_its_version_while_others_append_and_overwrite(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=20)
    reader = shards.open_dataset(uri)
    before, v = all_bytes(reader), reader.version
    with shards.create_dataset(uri, HOOKS, mode="append") as w:  # an append, and a retry of a committed unit
        w.write_unit(3, unit_columns(3, 20))
        w.write_unit(1, unit_columns(1, 20, seed=9))
    write_dataset(uri, units=2, rows=7, mode="overwrite", seed=4)  # the attack: rewrite everything
    assert all_bytes(reader) == before  # the same bytes: no file it reads was rewritten
    assert all_bytes(pickle.loads(pickle.dumps(reader))) == before  # a copy (Ray task, DataLoader) too
    old = shards.open_dataset(uri, version=v)
    assert old.version == v and all_bytes(old) == before and old.num_rows == 60
    np.testing.assert_allclose(old.stats("resid.0").mean, reader.stats("resid.0").mean)  # that version's stats
    latest = shards.open_dataset(uri)
    assert latest.num_rows == 14 and latest.version > v
    infos = versions(uri)
    assert [i.version for i in infos] == list(range(1, latest.version + 1))
    assert infos[-1].rows == 14 and any(i.operation == "overwrite" and i.units_removed == 4 for i in infos)
    report = shards.verify_dataset(uri)
    assert report.ok and report.versions_checked == list(range(1, latest.version + 1))
    assert report.units_checked == 3 + 1 + 1 + 2  # every file once: 3, the append, the retry, the overwrite's 2


def test_a_damaged_file_of_an_old_version_is_found(tmp_path, capsys):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=10)
    old_file = unit_file(tmp_path / "ds", 1)
    with shards.create_dataset(uri, HOOKS, mode="append") as w:
        w.write_unit(1, unit_columns(1, 10, seed=3))  # the latest version no longer names old_file
    old_file.write_bytes(old_file.read_bytes()[:-10])
    report = shards.verify_dataset(uri)
    assert not report.ok and list(report.bad) == [str(old_file.relative_to(tmp_path / "ds"))]
    assert main(["versions", uri]) == 0 and "append" in capsys.readouterr().out


def test_missing_version_names_what_is_kept(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=10)
    with pytest.raises(DatasetNotFoundError, match=r"no version 99: versions kept: 1\.\.3"):
        shards.open_dataset(uri, version=99)


def test_vacuum_keeps_the_newest_versions_and_only_their_files(tmp_path, capsys):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=10)
    write_dataset(uri, units=2, rows=10, mode="overwrite", seed=1)
    latest = shards.open_dataset(uri)
    data = tmp_path / "ds" / "data"
    assert len(list(data.iterdir())) == 5
    (data / "unit-000007-0a1b2c3d.parquet").write_bytes(b"garbage")  # a killed writer's file
    dry = vacuum(uri, keep=1, dry_run=True)
    assert len(list(data.iterdir())) == 6 and dry.removed_versions == list(range(1, latest.version))
    w = shards.create_dataset(uri, HOOKS, mode="append")  # a live writer: vacuum waits for its lock
    with pytest.raises(DatasetLockedError):
        vacuum(uri, keep=1)
    w.close()
    assert main(["vacuum", uri, "--keep", "1", "--full"]) == 0  # --full: the killed writer's file goes too
    assert sorted(p.name for p in data.iterdir()) == sorted(Path(u.path).name for u in latest.units)
    assert [v.version for v in versions(uri)] == [latest.version]
    assert all_bytes(shards.open_dataset(uri)) == all_bytes(latest) and shards.verify_dataset(uri).ok
    with pytest.raises(DatasetNotFoundError, match="versions kept"):
        shards.open_dataset(uri, version=1)


def test_v1_dataset_reads_and_becomes_v2_on_its_next_commit(tmp_path):
    uri = tmp_path / "v1"
    shutil.copytree(V1 / "list-zstd", uri)
    old = shards.open_dataset(str(uri))
    assert old.manifest.format_version == 1
    before = all_bytes(old)
    assert shards.open_dataset(str(uri), version=old.version).num_rows == old.num_rows
    hooks = {n: {"shape": list(s.shape), "dtype": s.dtype, "encoding": s.encoding} for n, s in old.schema.hooks.items()}
    gen = torch.Generator().manual_seed(0)
    cols = {"example_id": np.arange(1000, 1005),
            **{n: torch.randn(5, *s.shape, generator=gen).to(getattr(torch, s.dtype))
               for n, s in old.schema.hooks.items()}}
    with shards.create_dataset(str(uri), hooks, dict(old.schema.columns), mode="append",
                               compression=old.manifest.compression) as w:
        w.write_unit(max(u.id for u in old.units) + 1, cols)
    new = shards.open_dataset(str(uri))
    assert new.manifest.format_version == FORMAT_VERSION and new.num_rows == old.num_rows + 5  # upgraded
    assert all_bytes(old) == before and shards.verify_dataset(str(uri)).ok
    assert {u.path for u in old.units} <= {u.path for u in new.units}  # v1 unit files kept as they were

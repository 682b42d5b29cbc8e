"""Bytes in = bytes out on local disk, for every dtype, encoding and compression."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import shards
from shards.storage import Storage
from shards.versionlog import read_log
from tests.helpers import HOOKS, listed_units, raw_bytes, unit_columns, unit_file, write_dataset


@pytest.mark.parametrize("encoding", ["binary", "list"])
@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_roundtrip_bytes_exact(tmp_path, encoding, compression):
    ds = write_dataset(str(tmp_path / "ds"), units=3, rows=40, encoding=encoding, compression=compression)
    assert ds.num_rows == 120 and len(ds.units) == 3
    assert ds.manifest.compression == compression
    assert all(h.encoding == encoding for h in ds.manifest.hooks.values())
    expected = [unit_columns(u, 40) for u in range(3)]
    got = ds.take(np.arange(120))  # stored dtype kept
    for name in HOOKS:
        want = torch.cat([e[name] for e in expected])
        assert got[name].dtype == want.dtype
        assert raw_bytes(got[name]) == raw_bytes(want), name
    assert got["example_id"].tolist() == list(range(120))
    assert got["label"] == [lab for e in expected for lab in e["label"]]
    np.testing.assert_array_equal(got["score"].numpy(), np.concatenate([e["score"] for e in expected]))
    np.testing.assert_array_equal(got["token_id"].numpy(), np.concatenate([e["token_id"] for e in expected]))


def test_to_numpy_and_iter_batches_values(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), units=2, rows=30)
    exp = [unit_columns(u, 30) for u in range(2)]
    f16 = ds.to_numpy("resid.0")
    assert f16.dtype == np.float16 and f16.shape == (60, 16)
    assert f16.tobytes() == raw_bytes(torch.cat([e["resid.0"] for e in exp]))
    bf = ds.to_numpy("resid.1")  # bfloat16 comes back as exact float32
    np.testing.assert_array_equal(bf, torch.cat([e["resid.1"] for e in exp]).float().numpy())
    batches = list(ds.iter_batches(batch_size=16, dtype=None))
    assert [len(b["example_id"]) for b in batches] == [16, 16, 16, 12]
    x = torch.cat([b["resid.1"] for b in batches])
    assert x.dtype == torch.bfloat16 and raw_bytes(x) == raw_bytes(torch.cat([e["resid.1"] for e in exp]))
    f32 = torch.cat([b["mlp.0"] for b in ds.iter_batches("mlp.0", batch_size=7)])
    assert raw_bytes(f32) == raw_bytes(torch.cat([e["mlp.0"] for e in exp]))


def test_file_layout_and_field_metadata(tmp_path):
    root = tmp_path / "ds"
    write_dataset(str(root), units=2, rows=10)
    manifest = json.loads((root / "manifest.json").read_text())
    names = sorted(p.name for p in (root / "data").iterdir())  # format v2: unit id plus an attempt tag
    assert [re.fullmatch(r"unit-(\d{6})-[0-9a-f]{8}\.parquet", n).group(1) for n in names] == ["000000", "000001"]
    # format v4: records go once a version after the one naming their units is committed (the latest's stay)
    assert {p.name for p in (root / "_pending").iterdir()} <= {"unit-000000.json", "unit-000001.json"}
    assert all(json.loads(pq.read_metadata(unit_file(root, u)).metadata[b"actlake.stats"]).keys() == set(HOOKS)
               for u in (0, 1))  # each unit's own statistics stay in its footer
    v = manifest["version"]
    # statistics files of the version that wrote them, named by its writer session (format v4); the units added
    # since (here the second) are named by the version, whose statistics merge their own in
    s = int(manifest["stats_files"]["mlp.0"].split(".v")[1][:9])
    tag = read_log(Storage(str(root)), s)[0].tag
    assert len(tag) == 8 and manifest["stats_files"] == {h: f"stats/{h}.v{s:09d}-{tag}.npz" for h in HOOKS}
    assert [p[0] for p in manifest["stats_pending"]] == [1] and s < v
    assert all((root / p).is_file() for p in manifest["stats_files"].values())
    # format v3: a log entry per version (what it changed), the first a checkpoint
    assert sorted(p.name for p in (root / "_log").iterdir()) == [f"v{i:09d}.json" for i in range(1, v + 1)]
    pf = pq.ParquetFile(unit_file(root, 1))
    field = pf.schema_arrow.field("resid.1")
    assert field.type.byte_width == 4 * 3 * 2
    assert field.metadata[b"actlake.dtype"] == b"bfloat16"
    assert json.loads(field.metadata[b"actlake.shape"]) == [4, 3]
    # no dictionary encoding and no min/max statistics on tensor columns
    col = pf.metadata.row_group(0).column(pf.schema_arrow.get_field_index("resid.0"))
    assert "RLE_DICTIONARY" not in col.encodings and "PLAIN_DICTIONARY" not in col.encodings
    assert not col.is_stats_set
    assert [u["path"] for u in listed_units(manifest)] == [f"data/{n}" for n in names]
    assert listed_units(manifest)[1]["example_range"] == [10, 19]


def test_row_groups_sized_in_bytes(tmp_path):
    hooks = {"h": {"shape": [1024], "dtype": "float16"}}  # 2 KiB per row
    with shards.create_dataset(str(tmp_path / "ds"), hooks, row_group_bytes=1 << 20) as w:
        w.write_unit(0, {"example_id": np.arange(2000), "h": np.zeros((2000, 1024), np.float16)})
    ds = shards.open_dataset(str(tmp_path / "ds"))
    groups = ds.units[0].row_groups
    assert sum(groups) == 2000 and len(groups) == 4 and max(groups) * 2048 <= 1 << 20


def test_retry_of_a_unit_leaves_one_copy(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=20)
    with shards.create_dataset(uri, HOOKS, mode="append") as w:
        w.write_unit(1, unit_columns(1, 20))  # the same unit again (a retry)
        w.write_unit(1, unit_columns(1, 20, seed=5))  # and once more with new values: replaces
    ds = shards.open_dataset(uri)
    assert ds.num_rows == 60 and len(ds.units) == 3
    # each attempt wrote a file of its own; the older versions name the replaced ones until vacuumed
    assert len(list((tmp_path / "ds" / "data").iterdir())) == 5
    assert len({u.path for u in ds.units}) == 3
    ids = torch.cat([b["example_id"] for b in ds.iter_batches(batch_size=64)]).tolist()
    assert sorted(ids) == list(range(60))
    got = ds.take(np.arange(20, 40), ["resid.0"], dtype=None)["resid.0"]
    assert raw_bytes(got) == raw_bytes(unit_columns(1, 20, seed=5)["resid.0"])
    # stats describe the replacement, not both copies
    assert ds.stats("resid.0").count == 60


def test_append_adds_units_and_keeps_metadata(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=10, provenance={"model": {"name": "m"}})
    with shards.create_dataset(uri, HOOKS, mode="append") as w:
        assert w.committed_units == {0, 1}
        w.write_unit(2, unit_columns(2, 10))
    ds = shards.open_dataset(uri)
    assert ds.num_rows == 30 and ds.manifest.model.name == "m"
    assert ds.schema.columns == {"label": "string", "score": "float64"}


def test_overwrite_replaces(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=10)
    old_id = shards.open_dataset(uri).dataset_id
    write_dataset(uri, units=1, rows=5, mode="overwrite")
    ds = shards.open_dataset(uri)
    assert ds.num_rows == 5 and ds.dataset_id != old_id
    # the old version stays readable (its files are kept until vacuumed)
    assert len(list((tmp_path / "ds" / "data").iterdir())) == 4


def test_inferred_columns_and_empty_dataset(tmp_path):
    uri = str(tmp_path / "ds")
    w = shards.create_dataset(uri, {"h": {"shape": [4], "dtype": "float32"}})
    ds0 = shards.open_dataset(uri)  # the first manifest exists before any unit
    assert ds0.num_rows == 0 and list(ds0.iter_batches()) == []
    w.write_unit(7, {"example_id": np.arange(3), "h": np.ones((3, 4), np.float32),
                     "split": np.array(["a", "b", "c"]), "label": np.array([1, 2, 3])})
    w.close()
    ds = shards.open_dataset(uri)
    assert ds.schema.columns == {"split": "string", "label": "int64"}
    b = next(iter(ds.iter_batches()))
    assert b["split"] == ["a", "b", "c"] and b["label"].tolist() == [1, 2, 3]
    assert b["position"].tolist() == [-1, -1, -1] and b["token_id"].tolist() == [-1, -1, -1]


def test_secrets_never_in_manifest(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=5, config={"out": "s3://AKIAXXX:supersecret@bucket/x",
                                                 "storage": {"key": "AKIAXXX", "secret": "supersecret",
                                                             "endpoint_url": "http://127.0.0.1:1"},
                                                 "hf_token": "hf_abc"})
    text = (tmp_path / "ds" / "manifest.json").read_text()
    assert "supersecret" not in text and "AKIAXXX" not in text and "hf_abc" not in text
    assert "http://127.0.0.1:1" in text


def test_resume_when_writer_died_before_its_first_manifest(tmp_path):
    """Units committed (records written) but no manifest yet: reopening in append mode folds them in."""
    import shutil

    uri = tmp_path / "ds"
    w = shards.create_dataset(str(uri), HOOKS, columns={"label": "string", "score": "float64"})
    for u in range(3):  # what a job's remote unit writers do: files and records, no version yet
        w.unit_writer().write(u, unit_columns(u, 10))
    w.lock.release_quietly()  # the writer dies
    (uri / "manifest.json").unlink()  # before its first version (the empty one it made at open is taken away)
    for name in ("_log", "_checkpoints"):
        shutil.rmtree(uri / name)
    with pytest.raises(shards.DatasetNotFoundError, match="writer died before its first manifest"):
        shards.open_dataset(str(uri))
    with shards.create_dataset(str(uri), HOOKS, mode="append") as w:  # columns=None: adopted from the records
        assert w.committed_units == {0, 1, 2}
        w.write_unit(3, unit_columns(3, 10))
    ds = shards.open_dataset(str(uri))
    assert ds.num_rows == 40 and ds.schema.columns == {"label": "string", "score": "float64"}
    assert ds.stats("resid.0").count == 40
    assert sorted(ds.take(np.arange(40))["example_id"].tolist()) == list(range(40))


def test_int32_hook_iterates_in_its_stored_dtype(tmp_path):
    """Regression: iter_batches(dtype=None) on an int32 hook (e.g. `sae encode`'s latent_ids) raised KeyError."""
    uri = str(tmp_path / "ds")
    ids = np.random.default_rng(0).integers(-3, 50_000, (70, 4)).astype(np.int32)
    with shards.create_dataset(uri, {"latent_ids": {"shape": [4], "dtype": "int32"}}) as w:
        w.write_unit(0, {"example_id": np.arange(70), "latent_ids": ids})
    ds = shards.open_dataset(uri)
    got = torch.cat([b["latent_ids"] for b in ds.iter_batches(batch_size=32, dtype=None)])
    assert got.dtype == torch.int32 and np.array_equal(got.numpy(), ids)
    as_float = torch.cat([b["latent_ids"] for b in ds.iter_batches(batch_size=32)])
    assert as_float.dtype == torch.float32 and np.array_equal(as_float.numpy(), ids.astype(np.float32))

"""Bad input: a clear error naming the problem, and nothing written."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import shards
from tests.helpers import HOOKS, unit_columns, write_dataset


def tree(path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def test_missing_manifest(tmp_path):
    with pytest.raises(shards.DatasetNotFoundError, match="manifest.json not found"):
        shards.open_dataset(str(tmp_path / "nothing"))


def test_wrong_uri_scheme(tmp_path):
    with pytest.raises(shards.StorageError, match="nosuchfs://bucket"):
        shards.open_dataset("nosuchfs://bucket/x")
    with pytest.raises(shards.StorageError):
        shards.create_dataset("nosuchfs://bucket/x", HOOKS)


def test_unknown_hook_lists_close_names(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), units=1, rows=5)
    with pytest.raises(shards.UnknownHookError, match=r"unknown hook 'resid\.2'.*Did you mean 'resid\.1', 'resid\.0'"):
        ds.iter_batches(["resid.2"])
    with pytest.raises(shards.UnknownHookError, match="resid_0"):
        ds.to_numpy("resid_0")
    with pytest.raises(shards.UnknownHookError):
        ds.take([0], hooks=["mlp0"])


def test_schema_mismatch_on_append_writes_nothing(tmp_path):
    uri = tmp_path / "ds"
    write_dataset(str(uri), units=2, rows=5)
    before = {p: (uri / p).read_bytes() for p in tree(uri)}
    other = {**HOOKS, "resid.0": {"shape": [17], "dtype": "float16"}}
    with pytest.raises(shards.SchemaMismatchError, match=r"hook 'resid\.0': existing \[16\] float16"):
        shards.create_dataset(str(uri), other, mode="append")
    with pytest.raises(shards.SchemaMismatchError, match="missing from the new writer"):
        shards.create_dataset(str(uri), {"resid.0": HOOKS["resid.0"]}, mode="append")
    with pytest.raises(shards.SchemaMismatchError, match="metadata columns"):
        shards.create_dataset(str(uri), HOOKS, columns={"label": "int64"}, mode="append")
    assert {p: (uri / p).read_bytes() for p in tree(uri)} == before


def test_create_on_existing_dataset(tmp_path):
    write_dataset(str(tmp_path / "ds"), units=1, rows=5)
    with pytest.raises(shards.DatasetExistsError, match="mode='append'"):
        shards.create_dataset(str(tmp_path / "ds"), HOOKS)


@pytest.mark.parametrize("dtype", ["int8", "float64", "float8"])
def test_unsupported_dtype_declared(tmp_path, dtype):
    with pytest.raises(shards.UnsupportedDtypeError, match=f"unsupported tensor dtype '{dtype}'"):
        shards.create_dataset(str(tmp_path / "ds"), {"h": {"shape": [4], "dtype": dtype}})
    assert not (tmp_path / "ds").exists()


def test_wrong_tensor_dtype_or_shape_in_unit(tmp_path):
    uri = tmp_path / "ds"
    w = shards.create_dataset(str(uri), {"h": {"shape": [4], "dtype": "float16"}}, columns={})
    with pytest.raises(shards.UnsupportedDtypeError, match="declared float16"):
        w.write_unit(0, {"example_id": np.arange(3), "h": torch.zeros(3, 4)})
    with pytest.raises(shards.UnsupportedDtypeError):
        w.write_unit(0, {"example_id": np.arange(3), "h": np.zeros((3, 4), np.float64)})
    with pytest.raises(shards.SchemaMismatchError, match=r"expected an array of shape \(3, 4\)"):
        w.write_unit(0, {"example_id": np.arange(3), "h": np.zeros((3, 5), np.float16)})
    with pytest.raises(shards.SchemaMismatchError, match="unknown columns"):
        w.write_unit(0, {"example_id": np.arange(3), "h": np.zeros((3, 4), np.float16), "x": np.ones(3)})
    with pytest.raises(shards.SchemaMismatchError, match="missing hook"):
        w.write_unit(0, {"example_id": np.arange(3)})
    w.close()
    assert not (uri / "data").exists() and shards.open_dataset(str(uri)).num_rows == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown mode"):
        shards.create_dataset(str(tmp_path / "a"), HOOKS, mode="upsert")
    with pytest.raises(ValueError, match="compression"):
        shards.create_dataset(str(tmp_path / "a"), HOOKS, compression="gzip")
    with pytest.raises(shards.SchemaMismatchError, match="positive shape"):
        shards.create_dataset(str(tmp_path / "a"), {"h": {"shape": [0], "dtype": "float16"}})
    with pytest.raises(shards.SchemaMismatchError, match="collides"):
        shards.create_dataset(str(tmp_path / "a"), {"position": {"shape": [2], "dtype": "float16"}})
    assert not (tmp_path / "a").exists()


def test_closed_writer(tmp_path):
    w = shards.create_dataset(str(tmp_path / "ds"), HOOKS)
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.write_unit(0, unit_columns(0, 3))

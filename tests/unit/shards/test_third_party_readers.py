"""The files are standard Parquet: plain pyarrow, DuckDB, polars and fastparquet read them
following docs/format.md's recipe (tensor = little-endian values in a fixed-size binary)."""

from __future__ import annotations

import glob
import json

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers import HOOKS, raw_bytes, unit_columns, write_dataset

ROWS, UNITS = 25, 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("third") / "ds"
    write_dataset(str(root), units=UNITS, rows=ROWS)
    exp = [unit_columns(u, ROWS) for u in range(UNITS)]
    return root, {k: (torch.cat([e[k] for e in exp]) if isinstance(exp[0][k], torch.Tensor)
                      else np.concatenate([e[k] for e in exp])) for k in exp[0]}


def committed_files(root) -> list[str]:
    """The unit files of the latest version, by docs/format.md's recipe (formats v3 and v4), with JSON and pyarrow."""
    m = json.loads((root / "manifest.json").read_text())
    ref = m["units"]
    tag = f"-{ref['checkpoint_tag']}" if ref.get("checkpoint_tag") else ""
    cp = json.loads((root / "_checkpoints" / f"v{ref['checkpoint']:09d}{tag}.json").read_text())
    units = {}
    for leaf in cp["leaves"]:
        rows = pq.read_table(root / leaf["path"], columns=["id", "path"]).to_pylist()
        units.update({u["id"]: u["path"] for u in rows})
    for i in cp["removed"]:
        units.pop(i, None)
    changes = ([(ref["added"], ref["removed"])] if "added" in ref else
               [(e.get("added", []), e.get("removed", [])) for e in
                (json.loads((root / "_log" / f"v{v:09d}.json").read_text()) for v in ref["chain"])])
    v = m["version"]  # versions committed after the root was written (format v4): apply them too
    while (root / "_log" / f"v{v + 1:09d}.json").exists():
        e = json.loads((root / "_log" / f"v{v + 1:09d}.json").read_text())
        changes.append((e.get("added", []), e.get("removed", [])))
        v += 1
    for added, removed in changes:
        units.update({u["id"]: u["path"] for u in added})
        for i in removed:
            units.pop(i, None)
    return [str(root / units[i]) for i in sorted(units)]


def decode(blobs: list[bytes], spec: dict) -> np.ndarray:
    """The recipe of docs/format.md: concatenate the blobs, view as the dtype, reshape."""
    np_dtype = {"float16": "<f2", "bfloat16": "<u2", "float32": "<f4"}[spec["dtype"]]
    return np.frombuffer(b"".join(blobs), dtype=np_dtype).reshape(len(blobs), *spec["shape"])


def test_plain_pyarrow(dataset):
    root, exp = dataset
    table = pq.read_table(committed_files(root))
    assert table.column("example_id").to_pylist() == exp["example_id"].tolist()
    for name, spec in HOOKS.items():
        arr = decode(table.column(name).to_pylist(), spec)
        assert arr.tobytes() == raw_bytes(exp[name])


def test_duckdb(dataset):
    root, exp = dataset
    files = committed_files(root)
    con = duckdb.connect()
    rows = con.execute(
        'SELECT example_id, position, label, "resid.0", "resid.1" FROM read_parquet(?) ORDER BY example_id',
        [files]).fetchall()
    assert [r[0] for r in rows] == exp["example_id"].tolist()
    assert [r[2] for r in rows] == list(exp["label"])
    assert decode([r[3] for r in rows], HOOKS["resid.0"]).tobytes() == raw_bytes(exp["resid.0"])
    assert decode([r[4] for r in rows], HOOKS["resid.1"]).tobytes() == raw_bytes(exp["resid.1"])
    # a typical analytical query on metadata
    counts = dict(con.execute("SELECT label, count(*) FROM read_parquet(?) GROUP BY label", [files]).fetchall())
    assert counts == {lab: int((exp["label"] == lab).sum()) for lab in set(exp["label"])}


def test_polars(dataset):
    root, exp = dataset
    df = pl.read_parquet(committed_files(root))
    assert df["example_id"].to_list() == exp["example_id"].tolist()
    assert df["score"].to_numpy().tobytes() == exp["score"].tobytes()
    assert decode(df["mlp.0"].to_list(), HOOKS["mlp.0"]).tobytes() == raw_bytes(exp["mlp.0"])


def test_fastparquet_metadata_and_raw_tensor_bytes(dataset):
    """fastparquet, an independent Parquet implementation, reads metadata and raw tensor bytes."""
    import fastparquet

    root, exp = dataset
    frames = [fastparquet.ParquetFile(f).to_pandas() for f in committed_files(root)]
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    assert df["example_id"].tolist() == exp["example_id"].tolist()
    assert df["position"].tolist() == exp["position"].tolist()
    assert df["label"].tolist() == list(exp["label"])
    for name, spec in HOOKS.items():
        assert decode(list(df[name]), spec).tobytes() == raw_bytes(exp[name])


def test_no_garbage_in_recipe(dataset):
    """Readers list committed files from the manifest, never by globbing data/."""
    root, _ = dataset
    (root / "data" / "unit-000099.parquet").write_bytes(b"half-written")
    assert len(glob.glob(str(root / "data" / "*.parquet"))) == UNITS + 1
    assert len(committed_files(root)) == UNITS
    (root / "data" / "unit-000099.parquet").unlink()


def test_the_format_recipe_reads_leaves_removals_and_the_log(tmp_path):
    """docs/format.md's v3 recipe (``committed_files``) against actlake's reader, on a dataset with leaves, removed
    ids, changes listed in the root and (after a large commit) changes only in the log."""
    import shards

    root = tmp_path / "ds"
    with shards.create_dataset(str(root), HOOKS, commit_interval=1e9) as w:
        for step in range(20):
            for u in range(step * 20, step * 20 + 20):
                w.write_unit(u, unit_columns(u, 2))
            if step in (5, 18):
                w.drop_units([step])
            w.flush()
        cp = json.loads((root / "manifest.json").read_text())["units"]
        assert "added" in cp and json.loads((root / "_checkpoints" / f"v{cp['checkpoint']:09d}-{cp['checkpoint_tag']}"
                                                            ".json").read_text())["leaves"]
        assert committed_files(root) == [str(root / u.path) for u in shards.open_dataset(str(root)).units]
        for u in range(400, 700):  # more than 256 changes since the checkpoint: the root names the log entries
            w.write_unit(u, unit_columns(u, 2))
        w.flush()
    assert "added" not in json.loads((root / "manifest.json").read_text())["units"]
    expected = [str(root / u.path) for u in shards.open_dataset(str(root)).units]
    assert committed_files(root) == expected and len(expected) == 700 - 2

"""Format compatibility kept on purpose: datasets written by the v1 writer of commit 7b0a2cd
(tests/historical_datasets/v1, made by make_v1.py, never rewritten) are read, verified and appended to."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

import shards
from tests.helpers import HOOKS, raw_bytes, unit_columns
from tests.historical_datasets.make_v1 import ROWS, SEED, UNITS, V1_HOOKS, v1_columns

V1 = Path(__file__).resolve().parents[2] / "historical_datasets" / "v1"


def expected(columns_of, units: int, names) -> dict:
    exp = [columns_of(u) for u in range(units)]
    return {k: torch.cat([e[k] for e in exp]) if isinstance(exp[0][k], torch.Tensor)
            else np.concatenate([e[k] for e in exp]) for k in names}


def test_v1_multi_dtype_reads_bytes_exact():
    ds = shards.open_dataset(str(V1 / "multi-dtype"))
    assert ds.num_rows == UNITS * ROWS and ds.hooks == list(V1_HOOKS) and ds.version == 0  # v1 had no counter
    exp = expected(v1_columns, UNITS, [*V1_HOOKS, "example_id", "label", "score", "token_id"])
    got = ds.take(np.arange(ds.num_rows))
    for name in V1_HOOKS:
        assert raw_bytes(got[name]) == raw_bytes(torch.as_tensor(exp[name])), name
    assert got["label"] == list(exp["label"]) and np.array_equal(got["score"].numpy(), exp["score"])
    ids = torch.cat([b["ids"] for b in ds.iter_batches("ids", batch_size=5, dtype=None)])
    assert ids.dtype == torch.int32 and np.array_equal(ids.numpy(), exp["ids"])
    x = ds.to_numpy("resid.0").astype(np.float64).reshape(ds.num_rows, -1)
    np.testing.assert_allclose(ds.stats("resid.0").mean, x.mean(0), rtol=1e-6, atol=1e-6)
    assert ds.manifest.stats["mlp.0"].count == ds.num_rows
    assert ds.manifest.model.name == "synthetic" and ds.manifest.config["seed"] == SEED
    assert ds.manifest.job_identity is None  # written before job identities existed
    assert shards.verify_dataset(str(V1 / "multi-dtype")).ok


def test_v1_list_encoding_with_zstd():
    ds = shards.open_dataset(str(V1 / "list-zstd"))
    hooks = {k: HOOKS[k] for k in ("resid.0", "resid.1")}
    exp = expected(lambda u: unit_columns(u, ROWS, hooks, SEED), 2, list(hooks))
    assert ds.manifest.compression == "zstd" and {h.encoding for h in ds.manifest.hooks.values()} == {"list"}
    for name in hooks:
        got = torch.cat([b[name] for b in ds.iter_batches(name, batch_size=7, dtype=None)])
        assert raw_bytes(got) == raw_bytes(exp[name]), name
    assert shards.verify_dataset(str(V1 / "list-zstd")).ok


def test_v1_extraction_provenance_is_typed():
    ds = shards.open_dataset(str(V1 / "minilm-mean"))
    assert ds.num_rows == 6 and ds.hooks == ["resid.0"] and ds.hook_spec("resid.0").module == "encoder.layer.0"
    model = ds.manifest.model
    assert model.parameters == 22713216 and model.architecture == "BertModel" and model.max_positions == 512
    assert ds.manifest.provenance.details["corpus"]["source"] == "builtin:concepts?n=6"
    assert ds.metadata_table(["label"]).num_rows == 6 and shards.verify_dataset(str(V1 / "minilm-mean")).ok


def test_append_to_a_v1_dataset(tmp_path):
    """Today's writer continues an old dataset: old units untouched, new ones beside them, stats merged."""
    root = tmp_path / "ds"
    shutil.copytree(V1 / "multi-dtype", root)
    old_files = {p.name: p.read_bytes() for p in (root / "data").iterdir()}
    with shards.create_dataset(str(root), V1_HOOKS, mode="append", job_identity={"job": "append"}) as w:
        assert w.committed_units == set(range(UNITS))
        w.write_unit(UNITS, v1_columns(UNITS))
    ds = shards.open_dataset(str(root))
    assert ds.num_rows == (UNITS + 1) * ROWS and ds.version > 0 and ds.manifest.job_identity == {"job": "append"}
    assert all((root / "data" / name).read_bytes() == data for name, data in old_files.items())
    assert ds.stats("mlp.0").count == ds.num_rows
    got = ds.take(np.arange(UNITS * ROWS, ds.num_rows), ["resid.1"], dtype=None)["resid.1"]
    assert raw_bytes(got) == raw_bytes(v1_columns(UNITS)["resid.1"])
    assert shards.verify_dataset(str(root)).ok


# --- format v2 (tests/historical_datasets/v2, written by make_v2.py at commit 9abbd2a) ---------------------------
V2 = Path(__file__).resolve().parents[2] / "historical_datasets" / "v2" / "appended"


def _v2_rows(units) -> np.ndarray:
    from tests.historical_datasets.make_v2 import ROWS as V2_ROWS
    from tests.historical_datasets.make_v2 import SEED as V2_SEED

    return np.concatenate([unit_columns(u, V2_ROWS, HOOKS, V2_SEED)["example_id"] for u in units])


def test_v2_reads_every_kept_version_unchanged():
    ds = shards.open_dataset(str(V2))
    assert ds.manifest.format_version == 2 and ds.version == 6
    units_of = {1: [], 2: [0], 3: [0, 1], 4: [0, 1, 2], 5: [0, 1, 2, 3], 6: [0, 2, 3]}
    for v, units in units_of.items():
        old = shards.open_dataset(str(V2), version=v)
        ids = old.metadata_table(["example_id"]).column(0).to_numpy() if units else np.array([], np.int64)
        assert np.array_equal(ids, _v2_rows(units) if units else ids), v
    report = shards.verify_dataset(str(V2))
    assert report.ok and report.versions_checked == [1, 2, 3, 4, 5, 6]


def test_v2_becomes_v4_at_its_next_commit_chained_to_its_last_manifest(tmp_path):
    from shards.manifest import FORMAT_VERSION
    from shards.versionlog import digest, log_path, read_log

    uri = tmp_path / "v2"
    shutil.copytree(V2, uri)
    before = {v: shards.open_dataset(str(uri), version=v).metadata_table(["example_id"]) for v in range(1, 7)}
    with shards.create_dataset(str(uri), HOOKS, {"label": "string", "score": "float64"}, mode="append") as w:
        w.write_unit(4, unit_columns(4, 6, HOOKS, 13))
    new = shards.open_dataset(str(uri))
    assert new.manifest.format_version == FORMAT_VERSION == 4 and new.version == 7 and new.num_rows == 24
    entry, _raw = read_log(shards.storage.Storage(str(uri)), 7)
    assert entry.previous == {"version": 6, "digest": digest((uri / "_versions" / "v000000006.json").read_bytes())}
    assert (uri / log_path(7)).exists() and entry.checkpoint == 7  # the first v3 version is a checkpoint
    for v, table in before.items():  # every v2 version still reads as it did
        assert shards.open_dataset(str(uri), version=v).metadata_table(["example_id"]).equals(table)
    report = shards.verify_dataset(str(uri))
    assert report.ok and report.versions_checked == [1, 2, 3, 4, 5, 6, 7]
    (uri / "_versions" / "v000000006.json").write_text((uri / "_versions" / "v000000006.json").read_text() + " ")
    assert "rewritten" in shards.verify_dataset(str(uri)).versions["_versions/v000000006.json"]

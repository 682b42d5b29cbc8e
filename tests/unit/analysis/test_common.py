"""analysis/common: hooks in layer order, data arguments, row streaming, joins, run directories, results."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shards
from analysis.common.args import DataArgs
from analysis.common.fanout import map_hooks
from analysis.common.hooks import in_layer_order, layer_index
from analysis.common.join import JoinError, join_rows
from analysis.common.results import Results
from analysis.common.rundir import RunDir, RunMismatchError, RunRecord, fingerprint_of
from analysis.common.stream import sample_rows, stream_rows, stream_units
from tests.helpers import write_dataset


def test_hooks_in_layer_order():
    hooks = ["resid.10", "mlp.2", "resid.2", "embed", "model.layers.3.mlp", "stage.1", "pooler"]
    assert in_layer_order(hooks) == ["embed", "stage.1", "mlp.2", "resid.2", "model.layers.3.mlp", "resid.10",
                                     "pooler"]
    assert [layer_index(h) for h in ("embed", "resid.7", "encoder.layer.3.output")] == [-1, 7, 3]


def test_data_args_expand_globs_in_layer_order(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), units=2, rows=5)
    args = DataArgs(data=ds.uri, hooks="resid.*,mlp.0")
    opened = args.data.open(args.storage)
    assert args.resolve_hooks(opened) == ["mlp.0", "resid.0", "resid.1"] and opened.dataset_id == ds.dataset_id
    with pytest.raises(shards.UnknownHookError, match="unknown hook 'resid.9'"):
        DataArgs(data=ds.uri, hooks=["resid.9"]).resolve_hooks(opened)


def test_stream_rows_and_units(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), units=3, rows=20)
    x = ds.to_numpy("mlp.0")
    got = list(stream_rows(ds, "mlp.0", 7, columns=["example_id", "label"]))
    assert [len(b["x"]) for b in got] == [7] * 8 + [4]
    np.testing.assert_array_equal(np.concatenate([b["x"].numpy() for b in got]), x)
    assert np.concatenate([b["example_id"].numpy() for b in got]).tolist() == list(range(60))
    assert got[0]["label"][:3] == ["label-0", "label-1", "label-2"]
    shuffled = list(stream_rows(ds, "mlp.0", 8, shuffle=True, seed=4, columns=["example_id"], max_rows=25))
    ids = np.concatenate([b["example_id"].numpy() for b in shuffled])
    assert len(ids) == 25 and len(set(ids)) == 25 and ids.tolist() != sorted(ids.tolist())
    np.testing.assert_array_equal(np.concatenate([b["x"].numpy() for b in shuffled]), x[ids])
    sample = sample_rows(ds, ["mlp.0", "resid.0"], 10, seed=1)
    assert sample["mlp.0"].shape == (10, 8) and sample["resid.0"].shape == (10, 16)
    units = list(stream_units(ds, "resid.1", ["example_id", "token_id"]))
    assert [u.id for u, _ in units] == [0, 1, 2]
    for unit, rows in units:
        assert rows["x"].shape == (20, 12)
        assert rows["example_id"].tolist() == list(range(unit.id * 20, unit.id * 20 + 20))


def test_join_rows_on_stimulus_and_example_ids(tmp_path):
    rows = pa.table({"stimulus_id": ["a", "b", "c", "d"], "example_id": pa.array([0, 1, 2, 3], pa.int64())})
    labels = pa.table({"stimulus_id": ["d", "b", "x", "a"], "label": [4, 2, 9, 1]})
    idx = join_rows(rows, labels, ["stimulus_id"])
    assert idx.tolist() == [3, 1, -1, 0]
    by_id = pa.table({"example_id": pa.array([2, 0], pa.int32()), "y": [0.5, 1.5]})  # int32 keys join int64 ids
    assert join_rows(rows, by_id, ["example_id"]).tolist() == [1, -1, 0, -1]
    with pytest.raises(JoinError, match="each key must appear once"):
        join_rows(rows, pa.table({"stimulus_id": ["a", "a"]}), ["stimulus_id"])
    with pytest.raises(JoinError, match="cannot join on \\['subject'\\]"):
        join_rows(rows, labels, ["subject"])


def test_run_dir_states_and_refusal(tmp_path):
    st = shards.storage.Storage(str(tmp_path / "run"))
    rd = RunDir(st, "summary.json", resume_marker="ckpt.json")
    settings = {"hooks": ["resid.0"], "seed": 0}
    assert rd.state(settings) == "new"
    rd.start(RunRecord(fingerprint_of(settings), settings, {**settings, "out": str(tmp_path), "token": "SECRET"}))
    assert rd.state(settings) == "new"
    st.put_bytes("ckpt.json", b"{}")
    assert rd.state(settings) == "resume"
    with pytest.raises(RunMismatchError, match=r"different run \(seed: 0 -> 1\)"):
        rd.state({**settings, "seed": 1})
    rd.finish({"score": 1.0})
    assert rd.state(settings) == "done" and rd.summary() == {"score": 1.0}
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["token"] == "***" and "numpy" in record["libraries"]
    assert rd.state({**settings, "seed": 1}, overwrite=True) == "new"
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file()]


def test_results_and_local_fanout(tmp_path):
    out = Results(str(tmp_path / "res"))
    out.json("summary.json", {"a": 1})
    out.table("t.parquet", {"hook": ["resid.0"], "value": [0.5]})
    out.jsonl("m.jsonl", [{"step": 1}, {"step": 2}])
    from analysis.common.plots import pyplot

    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [1, 0])
    out.child("plots").figure("p.png", fig)
    assert out.read_json("summary.json") == {"a": 1}
    assert pq.read_table(tmp_path / "res" / "t.parquet").to_pydict() == {"hook": ["resid.0"], "value": [0.5]}
    assert (tmp_path / "res" / "m.jsonl").read_text().count("\n") == 2
    assert (tmp_path / "res" / "plots" / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert map_hooks(len, ["embed", "resid.10"]) == {"embed": 5, "resid.10": 8}

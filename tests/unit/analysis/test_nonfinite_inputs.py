"""Non-finite and degenerate inputs (issue 24, items 6, 7 and 12), without a model: the writer refuses NaN/inf
activations unless allowed (then counts them; manifests stay strict JSON); every analysis refuses a hook holding
them before any work; undefined results are refused or stored as null, never as numbers; bad inputs that gave
tracebacks give messages. Each failed before: the writer accepted NaN and manifest.json held `NaN`; sae train
saved all-NaN weights; a float NaN label became a class; align cka returned NaN; RSA against a constant RDM
reported 0.0; stats/probe raised LinAlgError; a string target column and `storage: {key: ...}` raised
TypeError/ValueError tracebacks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shards
from analysis.align.config import CkaConfig, EncodeConfig, RsaConfig
from analysis.align.encode_run import run as encode
from analysis.align.inputs import BrainInputError
from analysis.align.pairs_run import run_pairs
from analysis.align.rsa_run import run as rsa
from analysis.align.vectors import RdmError
from analysis.geometry.config import StatsConfig
from analysis.geometry.run import run as stats
from analysis.probe.config import ProbeConfig
from analysis.probe.run import run as probe
from analysis.sae.config import SaeTrainConfig
from analysis.sae.registry import SaeConfigError
from analysis.sae.train import run as train
from cluster.cli import main
from shards.errors import NonFiniteError

N, D = 120, 8


def _strict(path_or_text) -> dict:
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    text = path_or_text.read_text() if hasattr(path_or_text, "read_text") else path_or_text
    return json.loads(text, parse_constant=refuse)


def _dataset(path, allow: bool, bad_values: int = 3):
    rng = np.random.default_rng(0)
    good = rng.standard_normal((N, D)).astype(np.float32)
    bad = good.copy()
    bad.flat[rng.choice(N * D, bad_values, replace=False)] = [np.nan, np.inf, -np.inf][:bad_values]
    spec = {h: {"shape": [D], "dtype": "float32"} for h in ("good", "bad", "flat")}
    label = np.array(["a", "b"] * (N // 2), dtype=object)
    score = np.where(np.arange(N) % 7 == 0, np.nan, np.arange(N) % 2).astype(np.float64)
    with shards.create_dataset(str(path), spec, columns={"label": "string", "score": "float64",
                                                         "stimulus_id": "string"}, allow_nonfinite=allow) as w:
        w.write_unit(0, {"good": good, "bad": bad, "flat": np.ones((N, D), np.float32),
                         "example_id": np.arange(N), "label": label, "score": score,
                         "stimulus_id": np.array([f"s{i:03d}" for i in range(N)], object)})
    return str(path)


def test_the_writer_refuses_nonfinite_unless_allowed_and_manifests_stay_strict_json(tmp_path, capsys):
    with pytest.raises(NonFiniteError, match=r"bad \(3 values\).*--dtype bfloat16 or float32.*--allow-nonfinite"):
        _dataset(tmp_path / "refused", allow=False)
    assert not (tmp_path / "refused" / "manifest.json").exists() or shards.open_dataset(
        str(tmp_path / "refused")).num_rows == 0
    data = _dataset(tmp_path / "ds", allow=True)
    manifest = _strict(tmp_path / "ds" / "manifest.json")
    assert manifest["stats"]["bad"]["nonfinite"] == 3 and manifest["stats"]["bad"]["mean_norm"] is None
    assert "nonfinite" not in manifest["stats"]["good"] and manifest["stats"]["good"]["mean_norm"] > 0
    import pyarrow.parquet as pq

    for unit in (tmp_path / "ds" / "data").glob("*.parquet"):  # each unit's own statistics, in its footer
        assert _strict(pq.read_metadata(unit).metadata[b"actlake.stats"])["bad"]["norm_sum"] is None
    assert shards.verify_dataset(data).ok
    assert main(["info", data]) == 0
    out = capsys.readouterr().out
    assert "3 non-finite values (NaN/inf): statistics undefined" in out and "mean‖x‖ nan" not in out


def test_every_analysis_refuses_a_hook_holding_nonfinite_values(tmp_path):
    data = _dataset(tmp_path / "ds", allow=True)
    out = str(tmp_path / "out")
    with pytest.raises(NonFiniteError, match=r"`actlake sae train` needs finite activations.*bad \(3 values\)"):
        train(SaeTrainConfig(data=data, hook=["bad"], k=[2], expansion=[2], tokens="1k", batch_size=64, out=out))
    assert not (tmp_path / "out" / "sae_weights.safetensors").exists()
    with pytest.raises(NonFiniteError, match="`actlake stats`"):
        stats(StatsConfig(data=data, hooks=["bad"], out=out + "1"))
    with pytest.raises(NonFiniteError, match="`actlake probe`"):
        probe(ProbeConfig(data=data, hooks=["bad"], label="label", out=out + "2"))
    with pytest.raises(NonFiniteError, match="`actlake align cka`"):
        run_pairs(CkaConfig(data=data, hooks=["good", "bad"], out=out + "3"))


def test_undefined_results_are_refused_or_null(tmp_path):
    data = _dataset(tmp_path / "ds", allow=True)
    cka = run_pairs(CkaConfig(data=data, hooks=["good", "flat"], out=str(tmp_path / "cka")))
    assert cka.pairs[0]["score"] is None and "undefined" in cka.notes[-1]
    assert pq.read_table(tmp_path / "cka" / "results.parquet").column("score").null_count == 1
    with pytest.raises(SaeConfigError, match="constant"):
        train(SaeTrainConfig(data=data, hook=["flat"], k=[2], expansion=[2], tokens="1k", out=str(tmp_path / "s")))
    brain = np.zeros((N, N))
    np.save(tmp_path / "flat.npy", brain)
    with pytest.raises(RdmError, match="is constant"):
        rsa(RsaConfig(data=data, hooks=["good"], brain=[str(tmp_path / "flat.npy")], out=str(tmp_path / "rsa")))
    res = probe(ProbeConfig(data=data, hooks=["good"], label="score", task="classify", out=str(tmp_path / "p")))
    assert res.classes == ["0", "1"] and res.rows_used == N - len(range(0, N, 7))  # no class "nan"


def test_bad_response_tables_and_job_files_get_messages(tmp_path, capsys):
    data = _dataset(tmp_path / "ds", allow=True)
    ids = [f"s{i:03d}" for i in range(N)]
    pq.write_table(pa.table({"stimulus_id": ids, "v0": np.arange(N, dtype=float), "region": ["V1"] * N}),
                   tmp_path / "strings.parquet")
    with pytest.raises(BrainInputError, match=r"must be numbers; \['region \(string\)'\]"):
        encode(EncodeConfig(data=data, hooks=["good"], responses=str(tmp_path / "strings.parquet"),
                            out=str(tmp_path / "e")))
    pq.write_table(pa.table({"stimulus_id": ids}), tmp_path / "none.parquet")
    with pytest.raises(BrainInputError, match="no response columns"):
        encode(EncodeConfig(data=data, hooks=["good"], responses=str(tmp_path / "none.parquet"),
                            out=str(tmp_path / "e2")))
    job = tmp_path / "job.yaml"
    job.write_text(f"data: {data}\nhooks: good\nlabel: label\nstorage:\n  key: AKIAFAKE\n  secret: sssecret\n")
    assert main(["probe", "--config", str(job), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "credentials never go in job files" in err and "sssecret" not in err


def test_nan_responses_are_refused_with_exit_2_every_time(tmp_path):
    """`align encode` refusing NaN responses aborted (exit 134) in 2 of 14 runs of the attack; never here."""
    import subprocess
    import sys

    data = _dataset(tmp_path / "ds", allow=True)
    ids = [f"s{i:03d}" for i in range(N)]
    values = np.arange(N, dtype=float)
    values[5] = np.nan
    pq.write_table(pa.table({"stimulus_id": ids, "v0": values}), tmp_path / "nan.parquet")
    for i in range(3):
        done = subprocess.run([sys.executable, "-m", "cluster.cli", "align", "encode", "--data", data, "--hooks",
                               "good", "--responses", str(tmp_path / "nan.parquet"), "--out", str(tmp_path / f"o{i}")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "NaN or infinite" in done.stderr, done.stderr[-2000:]

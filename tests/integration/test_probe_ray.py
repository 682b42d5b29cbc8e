"""actlake probe with real parts: Ray tasks per hook (same numbers as in-process), S3 in and out on the loopback
server, a real MiniLM dataset extracted here, and a probe process killed mid-run then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.probe.config import ProbeConfig
from analysis.probe.run import run
from analysis.probe.targets import plan_probe
from shards.storage import Storage
from tests.unit.analysis.probe_data import planted_probe_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_two_ray_workers_give_the_numbers_of_one(ray_local, tmp_path):
    ds, _ = planted_probe_dataset(str(tmp_path / "ds"))
    cfg = dict(data=ds.uri, hooks=["embed", "resid.*"], label="label", control="shuffle", threads=1)
    one = run(ProbeConfig(**cfg, out=str(tmp_path / "one")))
    two = run(ProbeConfig(**cfg, out=str(tmp_path / "two"), workers=2))
    for h, v in one.hooks.items():
        assert two.hooks[h]["mean"] == pytest.approx(v["mean"], abs=1e-9)
        assert two.hooks[h]["control_mean"] == pytest.approx(v["control_mean"], abs=1e-9)
    a = pq.read_table(tmp_path / "one" / "probe_results.parquet").to_pylist()
    b = pq.read_table(tmp_path / "two" / "probe_results.parquet").to_pylist()
    assert [(r["hook"], r["fold"], r["n_test"], r["reg"]) for r in a] == [(r["hook"], r["fold"], r["n_test"], r["reg"])
                                                                          for r in b]


def test_probe_reads_and_writes_s3(ray_local, s3_bucket, s3_endpoint, tmp_path):
    uri, out = f"{s3_bucket}/acts/planted", f"{s3_bucket}/runs/probe"
    opts = {"endpoint_url": s3_endpoint}
    ds, _ = planted_probe_dataset(uri, storage_options=opts)
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"example_id": e, "odd": e % 2}) + "\n" for e in range(300)))
    Storage(f"{s3_bucket}/tables", opts).put_bytes("labels.jsonl", labels.read_bytes())
    s = run(ProbeConfig(data=uri, hooks=["resid.2", "resid.3"], label="label", out=out, workers=2,
                        storage=dict(endpoint_url=s3_endpoint)))
    assert s.hooks["resid.3"]["mean"] > 0.95 and s.dataset.dataset_id == ds.dataset_id
    store = Storage(out, opts)
    for name in ("probe_results.parquet", "summary.json", "probe_accuracy.png", "directions.safetensors"):
        assert store.exists(name)
    joined = run(ProbeConfig(data=uri, hooks=["resid.0"], labels=f"{s3_bucket}/tables/labels.jsonl", label="odd",
                             task="classify", out=f"{out}-odd", reg=["1"], storage=dict(endpoint_url=s3_endpoint)))
    assert joined.classes == ["0", "1"] and joined.hooks["resid.0"]["mean"] < 0.65  # noise hook: chance


def _sklearn_control(data: str, hook: str, cfg: ProbeConfig) -> float:
    """scikit-learn's mean control accuracy on the probe plan's own folds and control labels, C = 1 / reg."""
    from sklearn.linear_model import LogisticRegression

    import shards

    ds = shards.open_dataset(data)
    plan = plan_probe(cfg, ds, 384)
    st = ds.stats(hook)
    std = np.where(st.std > 1e-12, st.std, 1.0)  # a constant dim (one of resid.5's here) stays as the probe has it
    x = (ds.to_numpy(hook).astype(np.float64)[plan.rows] - st.mean) / std
    scores = []
    for f in range(plan.folds):
        tr, te = plan.fold != f, plan.fold == f
        model = LogisticRegression(C=1 / float(cfg.reg[0]), max_iter=3000).fit(x[tr], plan.control[tr])
        scores.append(model.score(x[te], plan.control[te]))
    return float(np.mean(scores))


def test_minilm_concepts_by_layer(ray_local, tmp_path):
    """The concept label over MiniLM's embeddings and residual stream, dataset made by the real extraction; the
    type control memorised at every layer (and said so), the shuffle control at chance, both as scikit-learn
    finds on the same folds and control labels."""
    from ingest.config import ExtractConfig
    from ingest.driver import run_extraction

    data = str(tmp_path / "minilm")
    run_extraction(ExtractConfig(data="builtin:concepts?n=240", out=data, hooks=["embed", "resid.*"], workers=1,
                                 unit_size=60, pool="none", pack=False, dtype="float16"))
    # one penalty, near the one the inner search picks here (0.34 for most hooks; the search is tested on planted
    # data in tests/unit/analysis/test_probe.py and above): the search took 5/6 of this test's time, and the
    # accuracies are the same to 0.01 (embed 0.31, resid.5 0.99 either way)
    typed = ProbeConfig(data=data, hooks=["embed", "resid.*"], label="label", control="type", reg=["1"],
                        out=str(tmp_path / "p"))
    s = run(typed)
    means = {h: v["mean"] for h, v in s.hooks.items()}
    assert list(means) == ["embed", *[f"resid.{i}" for i in range(6)]]
    # a token's concept needs context: the embeddings barely decode it, contextual layers do
    assert means["embed"] < 0.5 and max(means.values()) > 0.9
    assert s.concept_depth["layer_index"] >= 0
    # the corpus has fewer token types than MiniLM has dims: each type gets its own label at every layer
    assert all(v["control_mean"] >= 0.99 and v["selectivity"] < 0.01 for v in s.hooks.values())
    note = next(n for n in s.notes if n.startswith("--control type cannot be selective"))
    assert "384 dims" in note and "--control shuffle" in note
    assert any("scored at least the label at every hook" in n for n in s.notes)
    assert _sklearn_control(data, "embed", typed) >= 0.99
    shuffled = ProbeConfig(data=data, hooks=["embed", "resid.5"], label="label", control="shuffle", reg=["1"],
                           out=str(tmp_path / "shuffle"))
    sh = run(shuffled)
    chance = 1 / len(sh.classes)
    for h, v in sh.hooks.items():
        assert abs(v["control_mean"] - chance) < 0.1  # another example's label: nothing to read, nothing to memorise
        assert v["control_mean"] == pytest.approx(_sklearn_control(data, h, shuffled), abs=0.03)
    assert sh.hooks["resid.5"]["selectivity"] > 0.6 and sh.hooks["embed"]["selectivity"] < 0.25
    assert not any("control" in n for n in sh.notes)


def test_killed_probe_resumes_without_redoing_finished_hooks(tmp_path):
    ds, _ = planted_probe_dataset(str(tmp_path / "ds"), examples=600, d=64)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cluster.cli", "probe", "--data", ds.uri, "--hooks", "embed,resid.*",
           "--out", str(out), "--label", "label", "--control", "shuffle", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "hooks" / "embed.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = sorted(p.name for p in (out / "hooks").glob("*.json"))
    assert "embed.json" in done and not (out / "summary.json").exists()
    stamps = {n: (out / "hooks" / n).stat().st_mtime_ns for n in done}
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming: {len(done)} of 5 hooks already probed" in rerun.stderr
    assert all((out / "hooks" / n).stat().st_mtime_ns == t for n, t in stamps.items())
    clean = run(ProbeConfig(data=ds.uri, hooks=["embed", "resid.*"], label="label", control="shuffle", threads=1,
                            out=str(tmp_path / "clean")))
    resumed = json.loads((out / "summary.json").read_text())
    for h, v in clean.hooks.items():
        assert resumed["hooks"][h]["mean"] == pytest.approx(v["mean"], abs=1e-9)

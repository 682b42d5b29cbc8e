"""SAE training end to end: a killed run resumes to the same weights; Ray Train with 2 workers; MiniLM
activations against a PCA baseline; encoding into a latent dataset with top-activating token contexts."""

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
import torch
from safetensors.torch import load_file

import shards
from analysis.sae import load_sae
from analysis.sae.config import SaeEncodeConfig, SaeTrainConfig
from analysis.sae.encode import encode_dataset
from analysis.sae.train import train_sae
from tests.unit.analysis.sae_data import synthetic_dictionary

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("synth") / "ds")
    synthetic_dictionary(path)
    return path


def _cli(data: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", "sae", "train", "--data", data, "--hook", "x", "--arch", "batchtopk",
            "--k", "4", "--expansion", "4", "--tokens", "600k", "--batch-size", "1024", "--checkpoint-every", "10",
            "--log-every", "25", "--threads", "1", "--out", str(out)]


def test_killed_run_resumes_to_the_same_weights(synth, tmp_path):
    ref = subprocess.run(_cli(synth, tmp_path / "ref"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(synth, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest.json"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if latest.exists() and json.loads(latest.read_text())["step"] >= 200:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a real kill mid-run, between checkpoints
        proc.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert 200 <= killed_at < 586 and not (out / "sae_weights.safetensors").exists()
    rerun = subprocess.run(_cli(synth, out), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resumed {out} at step {killed_at}" in rerun.stderr
    a = load_file(tmp_path / "ref" / "sae_weights.safetensors")
    b = load_file(out / "sae_weights.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit for bit: same data order, same optimiser state
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 586


def test_ray_train_two_workers_match_one(ray_local, synth, tmp_path):
    common = dict(data=synth, hook="x", arch="topk", k="4", expansion="2", tokens="300k", batch_size=1024,
                  log_every=50, checkpoint_every=0, threads=1)
    threads = torch.get_num_threads()
    try:
        one = train_sae(SaeTrainConfig(out=str(tmp_path / "w1"), workers=1, **common))
    finally:
        torch.set_num_threads(threads)
    two = train_sae(SaeTrainConfig(out=str(tmp_path / "w2"), workers=2, **common))
    f1 = one.saes["x-topk-k4-x2"]["fvu"]
    f2 = two.saes["x-topk-k4-x2"]["fvu"]
    print(f"Ray Train: FVU 1 worker {f1:.4f}, 2 workers {f2:.4f} ({100 * (f2 - f1) / f1:+.1f} %)")
    assert two.steps == one.steps == 293
    assert abs(f2 - f1) / f1 < 0.05, (f1, f2)
    assert load_sae(str(tmp_path / "w2")).d_sae == 64


def test_minilm_topk_beats_pca_and_encodes_with_contexts(ray_local, tmp_path):
    from sklearn.decomposition import PCA

    from ingest.config import ExtractConfig
    from ingest.driver import run_extraction

    acts = str(tmp_path / "minilm")
    run_extraction(ExtractConfig(data="builtin:concepts?n=1500", hooks="resid.3", out=acts, workers=1,
                                 unit_size=500, dtype="float16"))
    ds = shards.open_dataset(acts)
    k = 16
    threads = torch.get_num_threads()
    try:
        summary = train_sae(SaeTrainConfig(data=acts, hook="resid.3", arch="topk", k=str(k), expansion="8",
                                           tokens="400k", batch_size=1024, out=str(tmp_path / "sae"),
                                           log_every=50, checkpoint_every=0, eval_tokens="100k"))
    finally:
        torch.set_num_threads(threads)
    fvu = summary.saes["resid.3-topk-k16-x8"]["fvu"]
    x = ds.to_numpy("resid.3").astype(np.float64)
    pca = PCA(n_components=k).fit(x)
    fvu_pca = 1 - pca.explained_variance_ratio_.sum()
    print(f"MiniLM resid.3, {ds.num_rows} tokens: TopK k={k} x8 FVU {fvu:.4f}; PCA {k} components FVU {fvu_pca:.4f}")
    assert fvu < fvu_pca
    (tmp_path / "fvu.json").write_text(json.dumps({"sae_fvu": fvu, "pca_fvu": fvu_pca}))
    enc = encode_dataset(SaeEncodeConfig(sae=str(tmp_path / "sae"), data=acts, out=str(tmp_path / "latents"),
                                         top_examples=5))
    lat = shards.open_dataset(str(tmp_path / "latents"))
    # at most k per row: TopK keeps the k largest pre-activations after ReLU, so a row whose k-th is <= 0 has fewer
    assert lat.num_rows == ds.num_rows and k * 0.99 <= enc.mean_l0 <= k
    assert lat.manifest.provenance.derived_from.dataset_id == ds.dataset_id
    ids = torch.cat([b["latent_ids"] for b in lat.iter_batches("latent_ids", batch_size=1000, dtype=None)])
    assert ids.dtype == torch.int32 and ids.shape == (ds.num_rows, k)  # int32 hooks iterate in their dtype
    src_meta = ds.metadata_table(["example_id", "position", "label"]).to_pydict()
    lat_meta = lat.metadata_table(["example_id", "position", "label"]).to_pydict()
    assert lat_meta == src_meta  # the same ids, row for row
    sae = load_sae(str(tmp_path / "sae"))
    rows = [0, 777, ds.num_rows - 1]
    with torch.no_grad():
        z = sae.encode(ds.take(rows, hooks=["resid.3"], dtype="float32")["resid.3"])
    got = lat.take(rows, dtype=None)
    ref_v, ref_i = z.topk(k, dim=-1)
    torch.testing.assert_close(got["latent_values"], ref_v)
    assert torch.equal(got["latent_ids"].long(), ref_i)
    top = pq.read_table(tmp_path / "latents" / "top_examples.parquet").to_pydict()
    assert "[[" in top["context"][0] and len(top["latent"]) > 0
    first = int(top["row"][0])
    assert top["token_id"][0] == int(ds.take([first], hooks=[], columns=["token_id"])["token_id"][0])


@pytest.mark.parametrize("factory", ["tiny_gpt2", "tiny_llama"])
def test_snmf_on_mlp_hidden_with_the_stored_output_projection(ray_local, tmp_path, factory):
    """extract --save-weights stores each mlp_hidden.N hook's output projection (GPT-2's Conv1D transposed to
    nn.Linear's layout): W_out @ hidden + b gives the MLP's output the model computed (the mlp.N hook).
    A semi-NMF of mlp_hidden.1 then writes its features' residual directions W_out @ z."""
    from ingest.config import ExtractConfig
    from ingest.driver import run_extraction
    from shards.errors import ActlakeError
    from shards.mlpweights import MLP_OUT, load_mlp_weights

    data = str(tmp_path / "acts")
    cfg = dict(model=f"tests.model_factories:{factory}", data="builtin:concepts?n=120", workers=1, unit_size=40,
               pool="none", pack=False, dtype="float32")
    with pytest.raises(ActlakeError, match="--save-weights stores the MLP output projections of mlp_hidden.N"):
        run_extraction(ExtractConfig(out=str(tmp_path / "no"), hooks=["resid.1"], save_weights=True, **cfg))
    run_extraction(ExtractConfig(out=data, hooks=["mlp_hidden.1", "mlp.1"], save_weights=True, **cfg))
    ds = shards.open_dataset(data)
    assert MLP_OUT in ds.manifest.artifacts and shards.verify_dataset(data).ok
    w_out, b_out = load_mlp_weights(ds, "mlp_hidden.1")
    rows = ds.take(list(range(0, ds.num_rows, 3)), hooks=["mlp_hidden.1", "mlp.1"])
    torch.testing.assert_close(rows["mlp_hidden.1"] @ w_out.T + (b_out if b_out is not None else 0), rows["mlp.1"],
                               rtol=1e-4, atol=1e-5)
    out = tmp_path / "snmf"
    train_sae(SaeTrainConfig(data=data, hook="mlp_hidden.1", arch="snmf", k="8", expansion="1", tokens="40k",
                             batch_size=512, out=str(out), checkpoint_every=0, threads=1))
    sae = load_sae(str(out))
    w_resid = load_file(str(out / "residual_directions.safetensors"))["W_resid"]
    torch.testing.assert_close(w_resid, sae.W_dec.detach() @ w_out.T)
    with torch.no_grad():  # the MLP's output rebuilt from the features' coefficients and residual directions
        y = sae.encode(rows["mlp_hidden.1"])
        torch.testing.assert_close(y @ w_resid, sae.decode(y) @ w_out.T, rtol=1e-4, atol=1e-5)
    assert (y >= 0).all() and ((y != 0).sum(1) <= 8).all()

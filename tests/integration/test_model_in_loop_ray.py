"""Interventions and `sae eval` on a real local Ray: a killed actor or driver, exactly-once rows and the same
numbers, job identity, the metrics against the stored per-token columns."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import shards
from analysis.common.inputs import DatasetInput
from analysis.sae.io import TrainedOn, load_sae, save_sae
from analysis.sae.registry import create_sae
from cluster.cli import main
from cluster.extract_command import cmd_extract
from cluster.sae_eval import SaeEvalConfig
from cluster.sae_eval import run as sae_eval
from ingest.config import ExtractConfig
from ingest.corpus import builtin_concepts
from shards.storage import Storage
from tests.integration.actor_kill import kill_an_actor_after
from tests.integration.test_extract_ray import assert_exactly_once
from tests.ray_tmp import ray_tmpdir_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GPT2 = "tests.model_factories:tiny_gpt2"
COLUMNS = ["loss", "clean_loss", "kl", "logit_top1", "token_top1"]


def _sorted_rows(uri: str, hook: str) -> dict[str, np.ndarray]:
    ds = shards.open_dataset(uri)
    table = ds.metadata_table(["example_id", "position", *COLUMNS]).to_pandas()
    order = np.lexsort((table["position"], table["example_id"]))
    x = ds.take(np.arange(ds.num_rows), dtype="float32")[hook].numpy()
    return {**{c: table[c].to_numpy(dtype=np.float64)[order] for c in COLUMNS}, hook: x[order]}


def test_intervened_extraction_with_a_killed_actor_gives_each_row_once_and_the_same_numbers(ray_local, tmp_path):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal(64).astype(np.float32))
    common = dict(model=GPT2, data="builtin:concepts?n=160", hooks=["resid.2"], dtype="float32", unit_size=10,
                  batch_size=5, save_loss=True, compare_clean=True, save_logits=1,
                  intervene=[f"resid.1:add:direction={tmp_path / 'd.npy'},scale=3"])
    cmd_extract(ExtractConfig(**common, out=str(tmp_path / "ref"), workers=1))
    out = str(tmp_path / "killed")
    with kill_an_actor_after(Storage(out), commits=3) as killed:
        summary = cmd_extract(ExtractConfig(**common, out=out, workers=2))
    assert killed, "no actor was killed"
    assert summary.ran_units == 16
    ds = assert_exactly_once(out, 160)
    assert ds.manifest.provenance.details["model_in_loop"]["interventions"][0]["kind"] == "add"
    ref, got = _sorted_rows(str(tmp_path / "ref"), "resid.2"), _sorted_rows(out, "resid.2")
    # the same numbers to float32 rounding: two actors with one thread each against one with two (BLAS splits
    # its sums by thread), so not bit for bit; the nulls in the same places
    for name in ref:
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(ref[name]), err_msg=name)
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert np.isnan(ref["loss"]).sum() == 160  # one null per context: its last token
    assert np.nanmean(ref["kl"]) > 1e-3 and np.nanmean(ref["loss"]) != np.nanmean(ref["clean_loss"])


def test_a_clean_and_an_intervened_run_never_share_an_out(ray_local, tmp_path, capsys):
    out = str(tmp_path / "acts")
    base = ["extract", "--model", GPT2, "--data", "builtin:concepts?n=10", "--hooks", "resid.1", "--out", out]
    assert main(base) == 0
    before = shards.open_dataset(out)
    assert main([*base, "--intervene", "resid.0:zero"]) == 2
    err = capsys.readouterr().err
    assert "made by a different job (interventions: None -> [{'hook': 'resid.0'" in err
    after = shards.open_dataset(out)
    assert (after.version, after.num_rows) == (before.version, before.num_rows)  # nothing was written
    assert shards.verify_dataset(out).ok


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """A clean dataset of tiny GPT-2's resid.1 (examples 0..39) and an SAE that names it, as sae train saves."""
    root = tmp_path_factory.mktemp("sae-eval")
    ds = str(root / "ds")
    cmd_extract(ExtractConfig(model=GPT2, data="builtin:concepts?n=40", hooks=["resid.1"], dtype="float32", out=ds))
    sae = create_sae("topk", d_in=64, d_sae=256, k=16, seed=1)
    with torch.no_grad():
        sae.b_dec.copy_(torch.as_tensor(shards.open_dataset(ds).stats("resid.1").mean).float())
    save_sae(sae, str(root / "sae"), {"hook": "resid.1", "dataset": ds,
                                      "dataset_id": shards.open_dataset(ds).dataset_id})
    return root


def test_sae_eval_numbers_come_from_the_stored_columns(trained):
    out = str(trained / "eval")
    s = sae_eval(SaeEvalConfig(sae=str(trained / "sae"), examples=48, out=out))
    assert s.example_ids == [40, 88]  # held out: after the dataset's 40 examples
    # overlap is decided by the texts: builtin:concepts' templated sentences can repeat a training example's
    seen = {r["text"] for r in builtin_concepts(40)}
    assert s.training_overlap == sum(r["text"] in seen for r in builtin_concepts(88)[40:])
    assert s.overlaps_training == (s.training_overlap > 0)
    rows = shards.open_dataset(f"{out}/rows")
    t = rows.metadata_table(["example_id", "loss", "spliced_loss", "ablated_loss", "spliced_kl"]).to_pandas()
    assert t["example_id"].min() == 40 and t["example_id"].max() == 87
    ok = t[["loss", "spliced_loss", "ablated_loss"]].notna().all(axis=1)
    clean, spliced, ablated = (t.loc[ok, c].astype(np.float64).mean() for c in ("loss", "spliced_loss", "ablated_loss"))
    m = s.metrics
    assert m["tokens"] == ok.sum()
    assert m["ce_clean"] == pytest.approx(clean, rel=1e-12) and m["ce_spliced"] == pytest.approx(spliced, rel=1e-12)
    assert m["ce_loss_recovered"] == pytest.approx((ablated - spliced) / (ablated - clean), rel=1e-9)
    assert m["delta_loss"] == pytest.approx(spliced - clean, rel=1e-9)
    assert m["kl"] == pytest.approx(t["spliced_kl"].mean(), rel=1e-6) and m["kl"] > 0
    assert m["l0"] == pytest.approx(16.0) and 0 < m["fvu"]
    on_disk = json.loads(Path(out, "eval.json").read_text())
    assert on_disk["metrics"] == pytest.approx(m)
    assert {"position", "tokens", "ce_clean", "ce_spliced", "ce_ablated", "kl"} <= set(
        pq.read_table(Path(out, "eval.parquet")).column_names)
    assert Path(out, "eval_by_position.png").stat().st_size > 10_000


def test_sae_eval_reads_the_version_the_sae_was_trained_on_and_records_it(trained, tmp_path):
    """The SAE's dataset grows by 40 more examples after training: heldout still starts after the 40 examples of
    the version it was trained on, and run.json and eval.json name that version (issue 37)."""
    from tests.unit.analysis.pinning import append

    ds = str(tmp_path / "ds")
    shutil.copytree(trained / "ds", ds)
    before = shards.open_dataset(ds)
    save_sae(load_sae(str(trained / "sae")), str(tmp_path / "sae"), TrainedOn(
        data=DatasetInput(ds, before.version), dataset_id=before.dataset_id, hook="resid.1").to_cfg())
    append(ds)  # another writer commits examples 40..
    assert shards.open_dataset(ds).version > before.version
    s = sae_eval(SaeEvalConfig(sae=str(tmp_path / "sae"), examples=8, out=str(tmp_path / "e")))
    assert s.example_ids == [40, 48] and s.dataset.version == before.version
    assert json.loads((tmp_path / "e" / "run.json").read_text())["inputs"]["data"]["version"] == before.version
    again = sae_eval(SaeEvalConfig(sae=str(tmp_path / "sae"), examples=8, out=str(tmp_path / "e")))
    assert again.metrics == s.metrics  # a rerun of the finished eval returns it


def test_sae_eval_refuses_an_sae_of_another_width_before_any_work(trained, tmp_path):
    save_sae(create_sae("topk", d_in=32, d_sae=64, k=4), str(tmp_path / "narrow"),
             {"hook": "resid.1", "dataset": str(trained / "ds")})
    from ingest.interventions import InterventionError

    with pytest.raises(InterventionError, match="d_in=32"):
        sae_eval(SaeEvalConfig(sae=str(tmp_path / "narrow"), examples=8, out=str(tmp_path / "e")))
    assert not (tmp_path / "e" / "rows" / "manifest.json").exists()


def test_sae_eval_killed_driver_resumes_with_the_same_numbers(trained, tmp_path, request):
    ref = sae_eval(SaeEvalConfig(sae=str(trained / "sae"), examples=96, out=str(tmp_path / "ref")))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cluster.cli", "sae", "eval", "--sae", str(trained / "sae"), "--examples", "96",
           "--out", str(out)]
    ray_tmp = ray_tmpdir_for(request)  # short (Ray's socket paths), removed after the test, pass or fail
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if len(list((out / "rows" / "data").glob("*.parquet"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the eval ended first: " + (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    assert not (out / "eval.json").exists()
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                           start_new_session=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert int(rerun.stderr.split(" already committed (skipped)")[0].rsplit(": ", 1)[1]) >= 2
    rows = shards.open_dataset(str(out / "rows"))
    meta = rows.metadata_table(["example_id", "position"]).to_pandas()
    assert not meta.duplicated().any() and sorted(meta["example_id"].unique()) == list(range(40, 136))
    got = json.loads((out / "eval.json").read_text())["metrics"]
    # to float32 rounding: the driver's own Ray and its BLAS may sum in another order than the reference's
    assert got == pytest.approx(ref.metrics, rel=1e-5, abs=1e-6)
    assert got["tokens"] == ref.metrics["tokens"] and got["rows"] == ref.metrics["rows"]


def test_sae_eval_of_an_encoder_measures_the_final_hidden_state(ray_local, tmp_path):
    """MiniLM has no LM head: the eval says so and compares final hidden states (cosine), spliced and ablated."""
    ds = str(tmp_path / "ds")
    cmd_extract(ExtractConfig(data="builtin:concepts?n=30", hooks=["resid.2"], dtype="float32", out=ds))
    sae = create_sae("topk", d_in=384, d_sae=768, k=32, seed=0)
    with torch.no_grad():
        sae.b_dec.copy_(torch.as_tensor(shards.open_dataset(ds).stats("resid.2").mean).float())
    save_sae(sae, str(tmp_path / "sae"), {"hook": "resid.2", "dataset": ds})
    s = sae_eval(SaeEvalConfig(sae=str(tmp_path / "sae"), examples=16, out=str(tmp_path / "eval")))
    assert s.measure == "cosine" and s.example_ids == [30, 46]
    t = shards.open_dataset(str(tmp_path / "eval" / "rows")).metadata_table(["spliced_cos", "ablated_cos"])
    spliced, ablated = (t.column(c).to_numpy().astype(np.float64).mean() for c in ("spliced_cos", "ablated_cos"))
    assert s.metrics["cos_spliced"] == pytest.approx(spliced) and s.metrics["cos_ablated"] == pytest.approx(ablated)
    assert s.metrics["cos_recovered"] == pytest.approx((spliced - ablated) / (1 - ablated))
    assert ablated < spliced < 1.0

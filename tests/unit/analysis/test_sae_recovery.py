"""SAEs recover a known dictionary; SAELens loads what we save; bad input gets clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.common.rundir import RunMismatchError
from analysis.sae import create_sae, load_sae, save_sae
from analysis.sae.config import SaeTrainConfig, parse_count
from analysis.sae.registry import SaeConfigError
from analysis.sae.train import train_sae
from tests.unit.analysis.sae_data import mean_best_cosine, synthetic_dictionary


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("synth") / "ds")
    return path, synthetic_dictionary(path)


def train(synth, tmp_path, arch, tokens="400k", **kw):
    data, _ = synth
    out = str(tmp_path / arch)
    kw.setdefault("log_every", 50)
    cfg = SaeTrainConfig(data=data, hook="x", arch=arch, k="4", expansion="2", tokens=tokens, batch_size=1024,
                         out=out, checkpoint_every=0, threads=1, **kw)
    return train_sae(cfg), out


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "mp", "snmf"])
def test_known_dictionary_is_recovered(synth, tmp_path, arch):
    """The synthetic rows are a planted semi-NMF factorisation too: x = Y Z, Y >= 0 with 4 winners per row,
    Z of either sign."""
    summary, out = train(synth, tmp_path, arch)
    sae = load_sae(out)
    cos = mean_best_cosine(synth[1], sae.W_dec.detach().numpy())
    print(f"{arch}: mean best cosine to the true atoms {cos:.3f}")
    assert cos >= 0.9, f"{arch}: mean best cosine {cos:.3f}"
    ev = next(iter(summary.saes.values()))
    assert ev["l0"] == pytest.approx(4.0, abs=0.5) and ev["fvu"] < 0.3
    for name in ("metrics.jsonl", "training_curves.png", "latent_frequency.png", "eval.json", "cfg.json"):
        assert (tmp_path / arch / name).is_file()


def test_saved_sae_reproduces_the_trained_one_in_raw_units(synth, tmp_path):
    """The input normalisation is folded into the weights: the saved SAE takes raw activations."""
    import shards

    summary, out = train(synth, tmp_path, "topk", tokens="50k", log_every=0)
    sae = load_sae(out)
    x = torch.from_numpy(shards.open_dataset(synth[0]).to_numpy("x")[:2000])
    with torch.no_grad():
        recon = sae.decode(sae.encode(x))
    fvu = float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvu == pytest.approx(summary.saes["x-topk-k4-x2"]["fvu"], rel=0.15)
    assert (sae.encode(x) != 0).sum(1).eq(4).all()
    # 49 steps: --log-every adapts (every step), so the training curves have 49 points, not 1
    metrics = (tmp_path / "topk" / "metrics.jsonl").read_text().splitlines()
    assert summary.steps == 49 and len(metrics) == 49


def test_min_position_leaves_out_attention_sink_rows(tmp_path):
    """Each context's first row 100x larger (a causal LM's attention sink): --min-position 1 leaves those rows
    out of the training batches, the input scale, b_dec and the evaluation."""
    import shards
    from analysis.sae.runner import input_scale

    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((32, 16))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    n, ctx = 24000, 8
    z = np.zeros((n, 32))
    np.put_along_axis(z, np.argsort(rng.random((n, 32)), axis=1)[:, :2], rng.uniform(0.5, 1.5, (n, 2)), axis=1)
    x = (z @ atoms).astype(np.float32)
    pos = np.arange(n) % ctx
    x[pos == 0] *= 100
    path = str(tmp_path / "sink")
    with shards.create_dataset(path, {"x": {"shape": [16], "dtype": "float32"}}) as w:
        for u in range(3):
            sl = slice(u * n // 3, (u + 1) * n // 3)
            w.write_unit(u, {"example_id": np.arange(n)[sl] // ctx, "position": pos[sl], "x": x[sl]})
    ds = shards.open_dataset(path)
    kept = x[pos > 0]
    assert input_scale(ds, "x", True, 1) == pytest.approx(4.0 / np.linalg.norm(kept, axis=1).mean(), rel=0.02)
    runs = {}
    for min_pos in (0, 1):
        out = tmp_path / f"min{min_pos}"
        runs[min_pos] = train_sae(SaeTrainConfig(data=path, hook="x", k="2", expansion="2", tokens="200k",
                                                 batch_size=1024, out=str(out), checkpoint_every=0, threads=1,
                                                 min_position=min_pos, eval_tokens="1M"))
    ev = runs[1].saes["x-topk-k2-x2"]
    import pyarrow.parquet as pq

    held = pq.read_table(tmp_path / "min1" / "heldout_examples.parquet").column("example_id").to_numpy()
    assert 0 < len(held) < n // ctx
    # evaluated on the held-out examples' kept rows only
    assert ev["rows"] == int(((pos > 0) & np.isin(np.arange(n) // ctx, held)).sum())
    sae = load_sae(str(tmp_path / "min1"))
    with torch.no_grad():
        xk = torch.from_numpy(x[(pos > 0) & np.isin(np.arange(n) // ctx, held)])
        fvu = float((sae.decode(sae.encode(xk)) - xk).pow(2).sum() / (xk - xk.mean(0)).pow(2).sum())
    assert fvu == pytest.approx(ev["fvu"], rel=1e-4) and fvu < 0.2
    held0 = pq.read_table(tmp_path / "min0" / "heldout_examples.parquet").column("example_id").to_numpy()
    assert runs[0].saes["x-topk-k2-x2"]["rows"] == int(np.isin(np.arange(n) // ctx, held0).sum())
    with pytest.raises(SaeConfigError, match=r"--min-position 8 leaves no row .*highest position is 7"):
        train_sae(SaeTrainConfig(data=path, hook="x", min_position=8, out=str(tmp_path / "none")))


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu", "batchtopk"])
def test_saelens_loads_our_output(tmp_path, arch):
    """SAELens (installed beside our pins) loads the saved folder and computes the same latents."""
    sae_lens = pytest.importorskip("sae_lens")
    torch.manual_seed(0)
    ours = create_sae(arch, 16, 64, k=5, seed=3)
    with torch.no_grad():
        ours.b_enc.normal_(0, 0.1)
        ours.b_dec.normal_(0, 0.1)
        if arch == "jumprelu":
            ours.log_threshold.fill_(np.log(0.05))
        if arch == "batchtopk":
            ours.threshold.fill_(0.07)
    ours.eval()
    save_sae(ours, str(tmp_path / arch), {"hook": "resid.1"})
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    assert cfg["d_in"] == 16 and cfg["d_sae"] == 64
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch))
    x = torch.randn(50, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(theirs.decode(theirs.encode(x)), ours.decode(ours.encode(x)), rtol=1e-5,
                                   atol=1e-5)
    back = load_sae(str(tmp_path / arch))
    torch.testing.assert_close(back.encode(x), ours.encode(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_encoder_gradients_equal_plain_autograd(arch):
    """The training path's hand-written encoder gradients (only the k chosen pre-activations, a CSR product
    for W_enc; b_dec's through a column sum) equal plain autograd's, AuxK's dead latents included."""
    grads = []
    for plain in (False, True):
        torch.manual_seed(0)
        sae = create_sae(arch, 24, 96, k=6, seed=2)
        with torch.no_grad():
            sae.b_dec.normal_(0, 0.3)
            sae.b_enc.normal_(0, 0.1)
        x = torch.randn(64, 24, generator=torch.Generator().manual_seed(1)).requires_grad_(plain)
        out = sae(x)
        dead = torch.zeros(96, dtype=torch.bool)
        dead[::3] = True
        loss = (out.recon - x).pow(2).sum(-1).mean() + sum(sae.loss_terms(x, out, dead).values())
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and {"W_enc", "b_enc", "b_dec", "W_dec"} <= grads[0].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


def test_snmf_coefficients_are_the_nonnegative_least_squares_solution():
    """The Y-step: on each row's winners, the multiplicative updates converge to scipy's NNLS solution, stay
    >= 0, never raise the error from one update count to the next, and zeros stay outside the winners."""
    from scipy.optimize import nnls

    torch.manual_seed(0)
    sae = create_sae("snmf", 24, 48, k=5, seed=1)
    x = torch.randn(40, 24, dtype=torch.float64)
    sae = sae.double()
    errors = []
    for iters in (0, 5, 50, 2000):
        sae.options.snmf_iters = iters
        with torch.no_grad():
            vals, idx = sae.coefficients(sae.pre_acts(x))
            recon = sae.decode(sae.encode(x))
        assert (vals >= 0).all() and ((sae.encode(x) != 0).sum(1) <= 5).all()
        errors.append(float((recon - x).pow(2).sum()))
    assert all(a >= b - 1e-9 for a, b in zip(errors, errors[1:], strict=False)), errors
    z = sae.W_dec.detach().numpy()
    for row in range(len(x)):
        ref, _ = nnls(z[idx[row].numpy()].T, x[row].numpy())
        np.testing.assert_allclose(vals[row].numpy(), ref, atol=1e-5)


def test_counts_parse():
    assert parse_count("5M") == 5_000_000 and parse_count("200k") == 200_000 and parse_count("5000000") == 5_000_000
    assert parse_count("1.5B") == 1_500_000_000
    with pytest.raises(ValueError, match="not a count"):
        parse_count("lots")


def test_bad_input(synth, tmp_path):
    data, _ = synth
    with pytest.raises(SaeConfigError, match=r"hook\(s\) \['resid.3'\] not in dataset.*it has \['x'\]"):
        train_sae(SaeTrainConfig(data=data, hook="resid.3", out=str(tmp_path / "a")))
    with pytest.raises(SaeConfigError, match="k=100 is larger than the SAE's width d_sae=64"):
        train_sae(SaeTrainConfig(data=data, hook="x", k="100", expansion="2", out=str(tmp_path / "b")))
    with pytest.raises(SaeConfigError, match="unknown SAE architecture 'topkk'.*Did you mean 'topk'"):
        train_sae(SaeTrainConfig(data=data, hook="x", arch="topkk", out=str(tmp_path / "c")))
    train_sae(SaeTrainConfig(data=data, hook="x", k="4", expansion="2", tokens="4096", batch_size=1024,
                             out=str(tmp_path / "run"), threads=1))
    with pytest.raises(RunMismatchError, match=r"already holds a different run \(k: \[4\] -> \[8\]\).*--overwrite"):
        train_sae(SaeTrainConfig(data=data, hook="x", k="8", expansion="2", tokens="4096", batch_size=1024,
                                 out=str(tmp_path / "run"), threads=1))
    summary = train_sae(SaeTrainConfig(data=data, hook="x", k="8", expansion="2", tokens="4096", batch_size=1024,
                                       out=str(tmp_path / "run"), threads=1, overwrite=True))
    assert summary.steps == 4
    weights = (tmp_path / "run" / "sae_weights.safetensors").stat().st_mtime_ns
    again = train_sae(SaeTrainConfig(data=data, hook="x", k="8", expansion="2", tokens="4096", batch_size=1024,
                                     out=str(tmp_path / "run"), threads=1))
    assert again == summary  # a finished run is not trained again
    assert (tmp_path / "run" / "sae_weights.safetensors").stat().st_mtime_ns == weights


def test_several_saes_from_one_pass_and_a_job_file(synth, tmp_path):
    """Comma lists train every combination on the same batches; a YAML job file drives `actlake sae train`."""
    from cluster.cli import main

    job = tmp_path / "job.yaml"
    job.write_text(f"data: {synth[0]}\nhook: x\narch: topk,mp\nk: '2,4'\nexpansion: 2\ntokens: 20k\n"
                   f"batch_size: 1024\nthreads: 1\ncheckpoint_every: 0\nout: {tmp_path / 'sweep'}\n")
    assert main(["sae", "train", "--config", str(job), "--log-every", "5"]) == 0
    summary = json.loads((tmp_path / "sweep" / "training_summary.json").read_text())
    assert sorted(summary["saes"]) == ["x-mp-k2-x2", "x-mp-k4-x2", "x-topk-k2-x2", "x-topk-k4-x2"]
    for name, ev in summary["saes"].items():
        sae = load_sae(str(tmp_path / "sweep" / name))
        assert sae.k == int(name.split("-k")[1].split("-")[0]) and ev["l0"] <= sae.k + 1e-6
    run = json.loads((tmp_path / "sweep" / "run.json").read_text())
    assert run["config"]["log_every"] == 5  # the flag overrode nothing else; the file gave the rest


def test_outputs_record_the_source_dataset_id(synth, tmp_path):
    """Regression: cfg.json, run.json and the encoded dataset recorded `None` as the dataset they came from."""
    from analysis.sae.config import SaeEncodeConfig
    from analysis.sae.encode import encode_dataset

    data, _ = synth
    dataset_id = json.loads((__import__("pathlib").Path(data) / "manifest.json").read_text())["dataset_id"]
    _, out = train(synth, tmp_path, "topk", tokens="8k")
    cfg = json.loads((tmp_path / "topk" / "cfg.json").read_text())
    assert cfg["actlake"]["dataset"]["dataset_id"] == dataset_id
    assert json.loads((tmp_path / "topk" / "run.json").read_text())["dataset"]["dataset_id"] == dataset_id
    encode_dataset(SaeEncodeConfig(sae=out, data=data, out=str(tmp_path / "latents"), top_examples=2))
    manifest = json.loads((tmp_path / "latents" / "manifest.json").read_text())
    assert manifest["provenance"]["derived_from"]["dataset_id"] == dataset_id


def test_second_sae_train_on_the_same_out_is_refused(tmp_path, capsys):
    """Issue 9, item 16: a run holds its --out's lock, as a dataset writer does; a second run is refused
    before it writes anything (no weights of one beside the run.json of the other)."""
    from cluster.cli import main
    from shards.lock import WriteLock
    from shards.storage import Storage
    from tests.helpers import write_dataset

    write_dataset(str(tmp_path / "ds"), units=1, rows=256, hooks={"h": {"shape": [8], "dtype": "float32"}})
    out = tmp_path / "run"
    running = WriteLock(Storage(str(out)), what="SAE output")
    running.acquire()
    try:
        rc = main(["sae", "train", "--data", str(tmp_path / "ds"), "--hook", "h", "--arch", "topk", "--k", "2",
                   "--expansion", "2", "--tokens", "1k", "--batch-size", "64", "--eval-tokens", "128",
                   "--out", str(out)])
    finally:
        running.release()
    assert rc == 2 and "SAE output" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []


def test_encode_takes_the_hook_from_a_saelens_only_cfg(synth, tmp_path):
    """An SAE whose cfg.json has only SAELens' fields (metadata.hook_name, no actlake section) still names its hook
    for sae encode, as it already did for the dashboard, sae eval and interventions (one reading: ``trained_on``)."""
    from analysis.sae.config import SaeEncodeConfig
    from analysis.sae.encode import encode_dataset
    from analysis.sae.io import trained_on

    data, _ = synth
    save_sae(create_sae("topk", d_in=32, d_sae=64, k=4), str(tmp_path / "sae"), {"hook": "x", "dataset": data})
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    cfg.pop("actlake")
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    record = trained_on(load_sae(str(tmp_path / "sae")))
    assert (record.data, record.hook) == (None, "x")
    s = encode_dataset(SaeEncodeConfig(sae=str(tmp_path / "sae"), data=data, out=str(tmp_path / "latents")))
    assert s.rows == 60000 and s.latents == 64

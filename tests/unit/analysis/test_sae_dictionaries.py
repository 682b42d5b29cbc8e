"""Dictionaries beyond SAEs, through `sae train`: a transcoder (one hook to another, with and without a skip
connection) on data where the target is an exact function of the input, and a crosscoder over two hooks that
share their features; the saved files load back (and in SAELens, where it has the type)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import shards
from analysis.sae.config import SaeTrainConfig
from analysis.sae.evals.synthetic import cosines
from analysis.sae.io import load_sae
from analysis.sae.train import run as train_sae
from shards.errors import ConfigError


def _write(path: str, hooks: dict[str, np.ndarray]) -> None:
    n = len(next(iter(hooks.values())))
    spec = {h: {"shape": [v.shape[1]], "dtype": "float32"} for h, v in hooks.items()}
    with shards.create_dataset(path, spec) as w:
        for u, sl in enumerate(np.array_split(np.arange(n), 4)):
            w.write_unit(u, {"example_id": sl.astype(np.int64), **{h: v[sl] for h, v in hooks.items()}})


@pytest.fixture(scope="module")
def relu_map(tmp_path_factory):
    """x ~ N(0, I_16); mlp = ReLU(W x) exactly (24 outputs); skip = ReLU(W x) + S x."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40000, 16)).astype(np.float32)
    w = rng.standard_normal((24, 16)).astype(np.float32) / 4
    s = rng.standard_normal((24, 16)).astype(np.float32) / 4
    y = np.maximum(x @ w.T, 0)
    path = str(tmp_path_factory.mktemp("tc") / "ds")
    _write(path, {"resid": x, "mlp": y, "mlp_skip": y + x @ s.T})
    return path, x, y


def _fvu(pred: torch.Tensor, target: np.ndarray) -> float:
    t = torch.from_numpy(target)
    return float((pred - t).pow(2).sum() / (t - t.mean(0)).pow(2).sum())


def test_transcoder_recovers_an_exact_relu_map_and_loads_in_saelens(relu_map, tmp_path):
    path, x, y = relu_map
    out = tmp_path / "tc"
    summary = train_sae(SaeTrainConfig(data=path, hook=["resid"], target_hook=["mlp"], arch=["relu"],
                                       expansion=["2"], tokens="3M", batch_size=1024, out=str(out),
                                       checkpoint_every=0, threads=1, options={"l1_coeff": 0.002}))
    ev = summary.saes["resid-to-mlp-relu-x2"]
    assert ev["fvu"] < 0.02  # held-out rows: the target is ReLU(W x), which 32 ReLU latents can express exactly
    tc = load_sae(str(out))
    assert tc.transcoder and tc.d_in == 16 and tc.d_out == 24
    with torch.no_grad():
        pred = tc.decode(tc.encode(torch.from_numpy(x[:4000])))
    assert _fvu(pred, y[:4000]) < 0.02
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "transcoder" and cfg["d_out"] == 24 and cfg["actlake"]["kind"] == "transcoder"
    assert cfg["actlake"]["in_hooks"] == ["resid"] and cfg["actlake"]["out_hooks"] == ["mlp"]
    sae_lens = pytest.importorskip("sae_lens")
    theirs = sae_lens.SAE.load_from_disk(str(out), device="cpu")
    with torch.no_grad():
        xt = torch.from_numpy(x[:500])
        torch.testing.assert_close(theirs.decode(theirs.encode(xt)), tc.decode(tc.encode(xt)), rtol=1e-4, atol=1e-4)


def test_skip_transcoder_fits_the_linear_part_with_its_skip(relu_map, tmp_path):
    path, x, _y = relu_map
    out = tmp_path / "skip"
    summary = train_sae(SaeTrainConfig(data=path, hook=["resid"], target_hook=["mlp_skip"], arch=["relu"],
                                       expansion=["2"], tokens="3M", batch_size=1024, out=str(out),
                                       checkpoint_every=0, threads=1, skip_connection=True,
                                       options={"l1_coeff": 0.002}))
    assert summary.saes["resid-to-mlp_skip-relu-x2"]["fvu"] < 0.02
    tc = load_sae(str(out))
    ds = shards.open_dataset(path)
    target = ds.take(np.arange(2000), hooks=["mlp_skip"], dtype="float32")["mlp_skip"]
    with torch.no_grad():
        xt = torch.from_numpy(x[:2000])
        pred = tc.reconstruct(xt).recon
    assert _fvu(pred, target.numpy()) < 0.02
    assert json.loads((out / "cfg.json").read_text())["architecture"] == "skip_transcoder"
    sae_lens = pytest.importorskip("sae_lens")
    theirs = sae_lens.SAE.load_from_disk(str(out), device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(theirs(xt), pred, rtol=1e-4, atol=1e-4)


def test_crosscoder_finds_shared_features_once(tmp_path):
    """Hooks a (16-d) and b (24-d) are written by the same 48 sparse features (directions F_i in a, G_i in b): one
    crosscoder latent per feature, with a decoder part in each hook."""
    rng = np.random.default_rng(1)
    f, g = rng.standard_normal((48, 16)), rng.standard_normal((48, 24))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    n = 60000
    acts = np.zeros((n, 48))
    idx = np.argsort(rng.random((n, 48)), axis=1)[:, :3]
    np.put_along_axis(acts, idx, rng.uniform(0.5, 1.5, (n, 3)), axis=1)
    path = str(tmp_path / "ds")
    _write(path, {"a": (acts @ f).astype(np.float32), "b": (acts @ g * 3).astype(np.float32)})  # b 3x louder
    out = tmp_path / "cc"
    summary = train_sae(SaeTrainConfig(data=path, hook=["a", "b"], crosscoder=True, arch=["topk"], k=["3"],
                                       expansion=["2"], tokens="4M", batch_size=2048, out=str(out),
                                       checkpoint_every=0, threads=1))
    assert summary.saes["a+b-topk-k3-x2"]["fvu"] < 0.05
    cc = load_sae(str(out))
    assert cc.d_in == 40 and not cc.transcoder
    w = cc.W_dec.detach().numpy()
    truth = np.concatenate([f, 3 * g], axis=1)  # each feature's joint write, in raw units
    cos = cosines(w, truth)
    found = (cos > 0.95).sum(0)
    assert (found == 1).mean() >= 0.9  # each shared feature found by exactly one latent
    best = cos.argmax(0)
    ratio = np.linalg.norm(w[best, 16:], axis=1) / np.linalg.norm(w[best, :16], axis=1)
    np.testing.assert_allclose(np.median(ratio), 3.0, rtol=0.1)  # and it writes both hooks, b 3x a


def test_dictionary_flags_are_checked_before_any_data_is_read(tmp_path):
    with pytest.raises(ConfigError, match="--crosscoder needs at least two hooks"):
        SaeTrainConfig(data=str(tmp_path / "none"), hook=["a"], crosscoder=True)
    with pytest.raises(ConfigError, match="cannot be combined"):
        SaeTrainConfig(hook=["a", "b"], crosscoder=True, target_hook=["c"])
    with pytest.raises(ConfigError, match="--arch mp cannot train a transcoder"):
        SaeTrainConfig(hook=["a"], target_hook=["b"], arch=["mp"])
    with pytest.raises(ConfigError, match="--skip-connection applies to transcoders"):
        SaeTrainConfig(hook=["a"], skip_connection=True)
    with pytest.raises(ConfigError, match="one per --hook"):
        SaeTrainConfig(hook=["a", "b", "c"], target_hook=["x", "y"])
    with pytest.raises(ConfigError, match="--eval-fraction must be in"):
        SaeTrainConfig(eval_fraction=1.0)


def test_model_diffing_crosscoder_over_two_aligned_datasets(tmp_path):
    """Two "models" over the same rows: 40 features written by both (F_i in A, G_i in B) and 8 only by B (what
    fine-tuning added). The crosscoder over A's x and B's x gives each shared feature one latent with decoder
    parts in both, and each B-only feature a latent whose A part is ~0: the model-diffing signature."""
    rng = np.random.default_rng(2)
    n, d = 60000, 16
    f, g = rng.standard_normal((48, d)), rng.standard_normal((48, d))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    f[40:] = 0  # B-only features
    acts = np.zeros((n, 48))
    idx = np.argsort(rng.random((n, 48)), axis=1)[:, :3]
    np.put_along_axis(acts, idx, rng.uniform(0.5, 1.5, (n, 3)), axis=1)
    _write(str(tmp_path / "A"), {"x": (acts @ f).astype(np.float32)})
    _write(str(tmp_path / "B"), {"x": (acts @ g).astype(np.float32)})
    out = tmp_path / "diff"
    summary = train_sae(SaeTrainConfig(data=str(tmp_path / "A"), crosscoder_data=str(tmp_path / "B"), hook=["x"],
                                       crosscoder=True, arch=["topk"], k=["3"], expansion=["2"], tokens="4M",
                                       batch_size=2048, out=str(out), checkpoint_every=0, threads=1))
    assert summary.saes["x+other:x-topk-k3-x2"]["fvu"] < 0.1
    cc = load_sae(str(out))
    w = cc.W_dec.detach().numpy()
    cos = cosines(w, np.concatenate([f, g], axis=1))
    best = cos.argmax(0)
    assert (cos.max(0) > 0.9).mean() >= 0.9
    share_a = np.linalg.norm(w[best, :d], axis=1) / np.linalg.norm(w[best], axis=1)
    assert np.median(share_a[:40]) > 0.5 and share_a[40:].max() < 0.15
    # misaligned rows are refused before training
    _write(str(tmp_path / "C"), {"x": (acts[: n - 8] @ g).astype(np.float32)})
    with pytest.raises(ConfigError, match="hold 60000 and 59992 rows"):
        train_sae(SaeTrainConfig(data=str(tmp_path / "A"), crosscoder_data=str(tmp_path / "C"), hook=["x"],
                                 crosscoder=True, out=str(tmp_path / "bad"), threads=1))


def test_evaluate_scores_a_transcoder_on_its_target(relu_map, tmp_path):
    """`sae evaluate` reads the transcoder's input and target hooks: its FVU is of the target, as training's."""
    from analysis.sae.evaluate import SaeEvaluateConfig
    from analysis.sae.evaluate import run as evaluate

    path, _x, _y = relu_map
    out = tmp_path / "tc"
    summary = train_sae(SaeTrainConfig(data=path, hook=["resid"], target_hook=["mlp"], arch=["topk"], k=["12"],
                                       expansion=["2"], tokens="1M", batch_size=1024, out=str(out),
                                       checkpoint_every=0, threads=1))
    ev = evaluate(SaeEvaluateConfig(sae=str(out), suite=["core"], out=str(tmp_path / "ev")))
    assert ev.rows.startswith("heldout")
    assert ev.metrics["core"]["fvu"] == pytest.approx(summary.saes["resid-to-mlp-topk-k12-x2"]["fvu"], rel=1e-5)
    assert json.loads((out / "cfg.json").read_text())["architecture"] == "topk_transcoder"  # no SAELens type

"""SAE evaluation: the held-out split, core metrics, synthetic ground truth, absorption and sparse probing, each
against an independent computation (numpy, brute force, scikit-learn) or hand-built cases with a known answer."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pyarrow as pa
import pytest
import torch

from analysis.sae.evals.absorption import absorption_scores
from analysis.sae.evals.core import core_metrics
from analysis.sae.evals.sparse_probing import KS, fold_scores
from analysis.sae.evals.synthetic import match, precision_recall
from analysis.sae.registry import create_sae
from analysis.sae.split import heldout_rows, plan_split
from analysis.sae.synthetic import SyntheticConfig, SyntheticData


def _meta(texts: list[list[int]]) -> pa.Table:
    ids, pos, tok = [], [], []
    for e, t in enumerate(texts):
        ids += [e] * len(t)
        pos += list(range(len(t)))
        tok += t
    return pa.table({"example_id": pa.array(ids, pa.int64()), "position": pa.array(pos, pa.int32()),
                     "token_id": pa.array(tok, pa.int32())})


def test_split_keeps_copies_of_a_text_together_and_is_stable():
    rng = np.random.default_rng(0)
    distinct = [list(rng.integers(0, 1000, rng.integers(3, 9))) for _ in range(300)]
    texts = [distinct[i] for i in rng.integers(0, 300, 3000)]  # 3000 examples, ~300 distinct texts
    meta = _meta(texts)
    split, held = plan_split(meta, 0.1, "text")
    assert split.examples == 3000 and split.distinct_texts == len({tuple(t) for t in texts})
    held_texts = {tuple(texts[i]) for i in held}
    train_texts = {tuple(texts[i]) for i in range(3000) if i not in set(held.tolist())}
    assert held_texts and not held_texts & train_texts  # no copy of a held-out text is trained on
    assert 0.05 < len(held_texts) / split.distinct_texts < 0.15
    rows = heldout_rows(meta, held)
    assert split.heldout_rows == len(rows) and split.train_rows == meta.num_rows - len(rows)
    # the same rows give the same split (digest), whatever the row order
    again, _ = plan_split(meta.take(pa.array(rng.permutation(meta.num_rows))), 0.1, "text")
    assert again.digest == split.digest
    # by example id, copies straddle the split: what --eval-group text prevents
    _, by_id = plan_split(meta, 0.1, "example")
    held_ids = set(by_id.tolist())
    assert {tuple(texts[i]) for i in by_id} & {tuple(texts[i]) for i in range(3000) if i not in held_ids}


def test_split_without_token_ids_groups_by_example():
    meta = pa.table({"example_id": pa.array(np.repeat(np.arange(500), 2), pa.int64()),
                     "position": pa.array(np.full(1000, -1), pa.int32()),
                     "token_id": pa.array([None] * 1000, pa.int32())})
    split, held = plan_split(meta, 0.2, "text")
    assert split.distinct_texts == 500 and split.heldout_rows == 2 * len(held)
    assert 60 < len(held) < 140


def test_core_metrics_against_numpy():
    torch.manual_seed(0)
    sae = create_sae("topk", d_in=12, d_sae=40, k=3, seed=1).eval()
    x = torch.randn(3000, 12) * torch.linspace(0.5, 2, 12)
    x[5] = 0  # an all-zero row: no direction, left out of cosine and L2 ratio
    ev, freq = core_metrics(sae, list(x.split(700)))
    with torch.no_grad():
        z = sae.encode(x)
        xh = sae.decode(z)
    X, H, Z = x.double().numpy(), xh.double().numpy(), z.double().numpy()
    fvu = ((X - H) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()
    ok = np.linalg.norm(X, axis=1) > 0
    nx, nh = np.linalg.norm(X[ok], axis=1), np.linalg.norm(H[ok], axis=1)
    f = (Z != 0).mean(0)
    assert ev.rows == 3000 and ev.fvu == pytest.approx(fvu, rel=1e-9)
    assert ev.explained_variance == pytest.approx(1 - fvu, rel=1e-9)
    assert ev.cossim == pytest.approx(np.mean((X[ok] * H[ok]).sum(1) / (nx * nh)), rel=1e-9)
    assert ev.l2_ratio == pytest.approx(np.mean(nh / nx), rel=1e-9)
    assert ev.relative_reconstruction_bias == pytest.approx((np.linalg.norm(H, axis=1) ** 2).mean()
                                                            / (X * H).sum(1).mean(), rel=1e-9)
    assert ev.l0 == pytest.approx((Z != 0).sum(1).mean()) and ev.l1 == pytest.approx(np.abs(Z).sum(1).mean())
    np.testing.assert_allclose(freq, f)
    assert ev.dead_below["0"] == pytest.approx((f == 0).mean())
    assert ev.dead_below["0.0001"] == pytest.approx((f <= 1e-4).mean())
    assert ev.dense_above["0.01"] == pytest.approx((f > 0.01).mean())


def test_mcc_equals_brute_force_matching():
    """Hungarian matching against every permutation (tiny case), uniqueness by hand."""
    rng = np.random.default_rng(3)
    truth = rng.standard_normal((5, 4))
    w = rng.standard_normal((5, 4))
    m, lat, feat = match(w, truth)
    a = w / np.linalg.norm(w, axis=1, keepdims=True)
    b = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    cos = np.abs(a @ b.T)
    best = max(np.mean([cos[i, p[i]] for i in range(5)]) for p in itertools.permutations(range(5)))
    assert m.mcc == pytest.approx(best, rel=1e-12)
    assert m.uniqueness == pytest.approx(len(set(cos.argmax(1))) / 5)
    # a dictionary of the truth itself, shuffled and sign-flipped: perfect; two copies of one feature: not unique
    truth = np.linalg.qr(rng.standard_normal((8, 8)))[0][:5]  # orthonormal: no other matching can compete
    perm = rng.permutation(5)
    m2, _, _ = match(-truth[perm], truth)
    assert m2.mcc == pytest.approx(1.0) and m2.uniqueness == 1.0 and m2.recovered == 1.0
    dup = truth.copy()
    dup[1] = truth[0]
    m3, _, _ = match(dup, truth)
    assert m3.uniqueness == pytest.approx(0.8) and m3.recovered == pytest.approx(0.8)


def test_precision_recall_by_hand():
    z_on = np.array([[1, 0], [1, 1], [0, 1], [1, 0]], dtype=bool)
    t_on = np.array([[1, 0], [0, 1], [0, 1], [1, 1]], dtype=bool)
    prec, rec = precision_recall(z_on, t_on, np.array([0, 1]), np.array([0, 1]))
    np.testing.assert_allclose(prec, [2 / 3, 1.0])
    np.testing.assert_allclose(rec, [1.0, 2 / 3])


def test_synthetic_rows_regenerate_exactly_and_follow_the_plan():
    data = SyntheticData(SyntheticConfig(d=32, n_features=256, mean_active=5, parents=8, children=3,
                                         correlated_pairs=8, seed=4))
    x, acts = data.rows(10_000, 40_000)
    x2, acts2 = data.take(np.array([10_000, 20_001, 39_999]))
    np.testing.assert_array_equal(x2, x[[0, 10_001, 29_999]])
    np.testing.assert_allclose(x, acts @ data.features, rtol=1e-5, atol=1e-5)
    on = acts > 0
    kids = data.cfg.child_ids
    for p in range(8):  # a child fires only with its parent, and at most one child at a time
        assert not (on[:, kids[p]].any(1) & ~on[:, p]).any()
        assert on[:, kids[p]].sum(1).max() <= 1
    first = 8 * 4
    a, b = on[:, first], on[:, first + 1]
    assert (a & b).mean() > 1.5 * a.mean() * b.mean()  # the correlated pair co-fires above chance
    free = on[:, data.free].mean(0)
    np.testing.assert_allclose(free, data.probs[data.free], atol=0.01)


def test_absorption_hand_built_cases():
    """Latent 0 is the letter's main latent; latent 1 a token-specific latent aligned with the probe."""
    cos = np.array([1.0, 0.6, 0.0, 0.05])
    main = [0]
    z = np.array([
        [2.0, 0.0, 1.0, 0.0],   # main fires, carries all: no absorption
        [0.0, 2.0, 1.0, 0.0],   # main silent, latent 1 carries 1.2 of x·p = 1.2: full absorption
        [0.5, 1.5, 0.0, 0.0],   # partial: main carries 0.5, latent 1 0.9 of x·p = 1.4
        [0.0, 0.0, 3.0, 4.0],   # main silent, only a barely aligned latent (cos 0.05 < 0.1): no fraction
        [0.0, 0.5, 0.0, 0.0],   # latent 1 carries 0.3 of x·p = 2.0 (< 40 %): not absorption
    ])
    x_proj = np.array([2.0, 1.2, 1.4, 0.2, 2.0])
    frac, full = absorption_scores(z, x_proj, cos, main)
    np.testing.assert_allclose(frac, [0.0, 1.0, 0.9 / 1.4, 0.0, 0.0])
    assert full.tolist() == [False, True, False, True, False]  # row 3: top latent cos 0.05 >= 0.025, 0.2/0.2


def test_sparse_probing_folds_match_scikit_learn():
    """The top-k-latent probe's score against the same folds, feature choice and probe fitted independently."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    n = 240
    y = np.repeat([1, 0], n // 2)
    z = np.abs(rng.standard_normal((n, 30))) * (rng.random((n, 30)) < 0.3)
    z[:, 7] += 1.5 * y  # latent 7 carries the label
    x = rng.standard_normal((n, 10)) + y[:, None] * 0.8
    groups = np.arange(n) // 2
    acc, raw = fold_scores(x, z, y, groups, seed=5)
    want_k, want_raw = {k: [] for k in KS}, []
    for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=5).split(x, y, groups):
        d = z[tr][y[tr] == 1].mean(0) - z[tr][y[tr] == 0].mean(0)
        for k in KS:
            top = np.argsort(-d, kind="stable")[:k]
            m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(z[tr][:, top], y[tr])
            want_k[k].append(m.score(z[te][:, top], y[te]))
        m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[tr], y[tr])
        want_raw.append(m.score(x[te], y[te]))
    assert acc == {k: pytest.approx(np.mean(v)) for k, v in want_k.items()}
    assert raw == pytest.approx(np.mean(want_raw))
    assert acc[1] > 0.8  # the planted latent is found first


def test_auto_suite_asks_each_metric_what_it_lacks(monkeypatch, capsys):
    """``--suite auto`` keeps no table of metric names: each entry's ``missing`` says what this dataset lacks and
    its ``order`` places it; a metric registered later is a ``--suite`` choice and joins the suite by itself."""
    from analysis.sae.evals.registry import METRICS, EvalInputs, EvalMetric, EvalOutcome, auto_suite
    from cluster.cli import main

    meta = _meta([[5, 6], [7, 8]]).set_column(2, "token_id", pa.nulls(4, pa.int32()))
    inputs = EvalInputs(sae=None, hook="h", rows=np.arange(4), read=lambda rows, cols: {}, columns=meta.column_names,
                        meta=meta)
    assert auto_suite(inputs) == (["core"], {"sparse_probing": "no label column",
                                             "absorption": "no token ids with a tokenizer",
                                             "synthetic": "not a synthetic dataset"})
    monkeypatch.setitem(METRICS, "even_rows", EvalMetric(
        "even_rows", lambda i: EvalOutcome({}), "test", order=15,
        missing=lambda i: None if len(i.rows) % 2 == 0 else "an odd number of rows"))
    assert auto_suite(inputs)[0] == ["core", "even_rows"]
    assert auto_suite(dataclasses.replace(inputs, rows=np.arange(3)))[1]["even_rows"] == "an odd number of rows"
    with pytest.raises(SystemExit):
        main(["sae", "evaluate", "--help"])
    assert "core, even_rows, sparse_probing" in " ".join(capsys.readouterr().out.split())

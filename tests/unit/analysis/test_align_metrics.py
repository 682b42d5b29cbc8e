"""CKA, shape distances, mutual k-NN and ridge encoding against independent implementations and the reference
libraries (scikit-learn, himalaya, scipy)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold

from analysis.align.metrics.cka import cka
from analysis.align.metrics.knn import mutual_knn
from analysis.align.metrics.procrustes import angular_distance, procrustes_distance
from analysis.align.moments import CrossMoments
from analysis.align.ridge import ridge_cv


def gram_hsic_cka(x, y, debiased):
    """Direct Gram-matrix CKA: HSIC with H K H, or Song et al.'s unbiased HSIC estimator."""
    kx, ky = x @ x.T, y @ y.T
    n = len(x)

    def hsic(k, m):
        if not debiased:
            h = np.eye(n) - 1.0 / n
            return np.trace(k @ h @ m @ h)
        k, m = k.copy(), m.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(m, 0)
        one = np.ones(n)
        return (np.trace(k @ m) + (one @ k @ one) * (one @ m @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ m @ one) / (n * (n - 3))

    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)) + 5
    return x, np.tanh(x @ rng.normal(size=(20, 15))) + rng.normal(size=(n, 15))


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_equals_gram_implementation(debiased):
    x, y = data()
    assert cka(x, y, debiased=debiased) == pytest.approx(gram_hsic_cka(x, y, debiased), abs=1e-9)


def test_streamed_cka_at_100k_rows_equals_in_memory_formula():
    x, y = data(100_000, seed=1)
    acc = CrossMoments([20, 15])
    for start in range(0, len(x), 8192):
        acc.add([x[start:start + 8192], y[start:start + 8192]])
    from analysis.align.metrics.cka import cka_from_moments

    xc, yc = x - x.mean(0), y - y.mean(0)
    biased = np.sum((xc.T @ yc) ** 2) / np.sqrt(np.sum((xc.T @ xc) ** 2) * np.sum((yc.T @ yc) ** 2))
    assert cka_from_moments(acc.pair(0, 1)) == pytest.approx(biased, abs=1e-9)
    # Kornblith's feature-space debiased estimator on the centred data
    n = len(x)
    rx, ry = (xc ** 2).sum(1), (yc ** 2).sum(1)

    def deb(dot, ra, rb):
        return dot - n / (n - 2) * ra @ rb + ra.sum() * rb.sum() / ((n - 1) * (n - 2))

    ref = deb(np.sum((xc.T @ yc) ** 2), rx, ry) / np.sqrt(deb(np.sum((xc.T @ xc) ** 2), rx, rx) *
                                                         deb(np.sum((yc.T @ yc) ** 2), ry, ry))
    assert cka_from_moments(acc.pair(0, 1), debiased=True) == pytest.approx(ref, abs=1e-9)


def test_cka_invariances_and_rbf_reference():
    x, y = data()
    q = np.linalg.qr(np.random.default_rng(2).normal(size=(15, 15)))[0]
    for debiased in (False, True):
        base = cka(x, y, debiased=debiased)
        assert cka(x, 3.0 * y @ q, debiased=debiased) == pytest.approx(base, abs=1e-12)
        assert cka(x, y, kernel="rbf", debiased=debiased) == pytest.approx(
            cka(x @ np.linalg.qr(np.random.default_rng(3).normal(size=(20, 20)))[0], y, kernel="rbf",
                debiased=debiased), abs=1e-12)  # rbf: invariant to rotation (distances kept)
    # RBF reference: Kornblith's gram_rbf (median heuristic) + centred HSIC, written out
    d2x = ((x[:, None] - x[None]) ** 2).sum(-1)
    d2y = ((y[:, None] - y[None]) ** 2).sum(-1)
    kx, ky = np.exp(-d2x / (2 * np.median(d2x))), np.exp(-d2y / (2 * np.median(d2y)))
    h = np.eye(len(x)) - 1 / len(x)
    ref = np.trace(kx @ h @ ky @ h) / np.sqrt(np.trace(kx @ h @ kx @ h) * np.trace(ky @ h @ ky @ h))
    assert cka(x, y, kernel="rbf") == pytest.approx(ref, abs=1e-9)


def test_shape_distances_equal_orthogonal_procrustes():
    x, y = data()
    xc, yc = x[:, :15] - x[:, :15].mean(0), y - y.mean(0)
    r, _ = orthogonal_procrustes(yc, xc)
    assert procrustes_distance(x[:, :15], y) == pytest.approx(np.linalg.norm(xc - yc @ r), abs=1e-9)
    cos = np.sum(xc * (yc @ r)) / (np.linalg.norm(xc) * np.linalg.norm(yc))
    assert angular_distance(x[:, :15], y) == pytest.approx(np.arccos(cos), abs=1e-9)
    assert angular_distance(x, 2 * x @ np.linalg.qr(np.random.default_rng(0).normal(size=(20, 20)))[0]) < 1e-6


def test_mutual_knn_equals_dense_platonic_form():
    x, y = data(500)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)

    def knn(f):
        s = f @ f.T
        np.fill_diagonal(s, -1e8)
        return np.argsort(-s, axis=1)[:, :10]

    ka, kb = knn(xn), knn(yn)
    ref = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ka, kb, strict=True)])
    assert mutual_knn(x, y, k=10, block=64) == pytest.approx(ref, abs=1e-12)
    assert mutual_knn(x, 5 * x, k=10) == 1.0


@pytest.mark.parametrize("p", [30, 200])  # primal (stimuli > features) and dual (features > stimuli) forms
def test_ridge_equals_sklearn_and_himalaya(p):
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV

    rng = np.random.default_rng(p)
    x = rng.normal(size=(90, p))
    y = x @ rng.normal(size=(p, 8)) * 0.2 + rng.normal(size=(90, 8)) * 2
    alphas = np.logspace(-2, 5, 12)
    ours = ridge_cv(x, y, alphas, folds=3, inner_folds=4)
    pred = np.empty_like(y)
    for f, (tr, te) in enumerate(KFold(3).split(x)):
        for t in range(8):
            m = RidgeCV(alphas=alphas, cv=KFold(4)).fit(x[tr], y[tr, t])
            assert m.alpha_ == ours.alphas[f, t]
            pred[te, t] = m.predict(x[te])
    np.testing.assert_allclose(ours.predictions, pred, atol=1e-6)
    him = ridge_cv(x, y, alphas, folds=3, inner_folds=4, score="neg_mse")
    for tr, te in KFold(3).split(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = HimalayaRidgeCV(alphas=alphas, cv=KFold(4), fit_intercept=True).fit(x[tr], y[tr])
        pred[te] = np.asarray(m.predict(x[te]))
    np.testing.assert_allclose(him.predictions, pred, atol=1e-6)


def test_ridge_recovers_planted_linear_responses():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 50))
    signal = x @ rng.normal(size=(50, 20))
    signal /= signal.std(0)
    y = signal + 0.5 * rng.normal(size=signal.shape)
    res = ridge_cv(x, y, np.logspace(-2, 4, 7))
    expected = 1 / np.sqrt(1 + 0.25)  # corr(signal, signal + noise)
    assert abs(res.r.mean() - expected) < 0.03

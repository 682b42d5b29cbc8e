"""Banded ridge and variance partitioning (issue 28, item 4) against himalaya (a test extra): the same band
weights and penalties give himalaya's ``BandedRidgeCV`` (random_search over an explicit γ list) choices,
weights, predictions and per-band R² (``r2_score_split``) to 1e-9; the partition of planted spaces recovers
what each one explains alone and what they share."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.align.banded import banded_ridge, partition, r2_split, simplex_grid

himalaya = pytest.importorskip("himalaya")


@pytest.fixture
def bands():
    rng = np.random.default_rng(0)
    n = 150
    shared = rng.standard_normal((n, 3))
    a = np.hstack([shared, rng.standard_normal((n, 7))])
    b = np.hstack([shared @ rng.standard_normal((3, 3)), rng.standard_normal((n, 12))])
    y = a[:, :6] @ rng.standard_normal((6, 5)) + 0.5 * b[:, 3:8] @ rng.standard_normal((5, 5))
    y += 0.8 * rng.standard_normal(y.shape)
    return a, b, y


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_banded_ridge_equals_himalaya(bands, fit_intercept):
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV

    set_backend("numpy")
    a, b, y = bands
    y = y if fit_intercept else y - y.mean(0)
    a, b = (a, b) if fit_intercept else (a - a.mean(0), b - b.mean(0))
    gammas, alphas = simplex_grid(2, 10), np.logspace(-2, 4, 13)
    ours = banded_ridge([a, b], y, gammas, alphas, cv=5, fit_intercept=fit_intercept)
    ref = BandedRidgeCV(groups="input", solver_params=dict(n_iter=gammas, alphas=alphas, progress_bar=False),
                        cv=5, fit_intercept=fit_intercept).fit([a, b], y)
    np.testing.assert_allclose(ours.alphas, ref.best_alphas_, rtol=1e-9)
    np.testing.assert_allclose(np.log(ours.gammas / ours.alphas), ref.deltas_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.coef, ref.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.cv_scores, ref.cv_scores_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.predict([a, b]), ref.predict([a, b]), rtol=1e-7, atol=1e-9)
    if not fit_intercept:
        from himalaya.scoring import r2_score_split

        split = ours.predict_split([a, b])
        np.testing.assert_allclose(split, ref.predict([a, b], split=True), rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(r2_split(y, split), r2_score_split(y, split), rtol=1e-12)


def test_partition_of_two_and_three_spaces():
    # R² of every subset's model for spaces whose contributions are known: A alone 0.3, B alone 0.2, C alone 0.1,
    # A and B share 0.15; nothing else overlaps
    ua, ub, uc, sab = 0.3, 0.2, 0.1, 0.15
    r2 = {frozenset("A"): ua + sab, frozenset("B"): ub + sab, frozenset("C"): uc,
          frozenset("AB"): ua + ub + sab, frozenset("AC"): ua + sab + uc, frozenset("BC"): ub + sab + uc,
          frozenset("ABC"): ua + ub + uc + sab}
    p = partition({k: np.array([v]) for k, v in r2.items()})
    want = {"unique A": ua, "unique B": ub, "unique C": uc, "shared A&B": sab, "shared A&C": 0, "shared B&C": 0,
            "shared A&B&C": 0}
    assert {k: pytest.approx(float(v[0]), abs=1e-12) for k, v in p.items()} == want
    two = partition({frozenset("A"): np.array([0.45]), frozenset("B"): np.array([0.35]),
                     frozenset("AB"): np.array([0.65])})
    assert float(two["shared A&B"][0]) == pytest.approx(0.15) and float(two["unique A"][0]) == pytest.approx(0.3)


def test_the_command_holds_out_and_partitions(bands, tmp_path):
    """``align banded`` over a dataset with hooks A and B: per outer fold, himalaya fit on the training stimuli
    (centred by their means) and r2_score_split on the test stimuli give the command's per-band shares."""
    import pandas as pd
    import pyarrow.parquet as pq
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV
    from himalaya.scoring import r2_score_split
    from sklearn.model_selection import KFold

    import shards
    from analysis.align.banded_run import run
    from analysis.align.config import BandedConfig

    set_backend("numpy")
    a, b, y = (v.astype(np.float32).astype(np.float64) for v in bands)
    ids = [f"s{i:03d}" for i in range(len(y))]
    with shards.create_dataset(str(tmp_path / "ds"), {"A": {"shape": [a.shape[1]], "dtype": "float32"},
                                                      "B": {"shape": [b.shape[1]], "dtype": "float32"}},
                               columns={"stimulus_id": "string"}) as w:
        w.write_unit(0, {"example_id": np.arange(len(y)), "stimulus_id": np.array(ids, dtype=object),
                         "A": a.astype(np.float32), "B": b.astype(np.float32)})
    resp = pd.DataFrame(y.astype(np.float32), columns=[f"v{j}" for j in range(y.shape[1])]).assign(stimulus_id=ids)
    resp.iloc[::-1].to_parquet(tmp_path / "resp.parquet")  # reversed: joined by id
    y = resp.drop(columns="stimulus_id").to_numpy(np.float64)
    s = run(BandedConfig(data=str(tmp_path / "ds"), hooks=["A", "B"], responses=str(tmp_path / "resp.parquet"),
                         alphas=list(np.logspace(-2, 4, 7)), steps=4, out=str(tmp_path / "out")))
    shares = []
    for tr, te in KFold(5).split(y):
        xa, xb, yt = a[tr] - a[tr].mean(0), b[tr] - b[tr].mean(0), y[tr] - y[tr].mean(0)
        ref = BandedRidgeCV(groups="input", solver_params=dict(n_iter=simplex_grid(2, 4), alphas=np.logspace(-2, 4, 7),
                                                               progress_bar=False), cv=5).fit([xa, xb], yt)
        split = ref.predict([a[te] - a[tr].mean(0), b[te] - b[tr].mean(0)], split=True)
        shares.append(r2_score_split(y[te] - y[tr].mean(0), split))
    want = np.mean(shares, axis=0).mean(1)
    assert [s.r2_split["A"], s.r2_split["B"]] == pytest.approx(list(want), abs=1e-6)
    assert s.partition["unique A"] > s.partition["unique B"] > 0  # A carries most of the planted signal
    t = pq.read_table(tmp_path / "out" / "partition.parquet").to_pandas()
    assert set(t.part) == {"unique A", "unique B", "shared A&B"} and (tmp_path / "out" / "report.html").exists()
    # band B from another model's dataset, its stimuli in reverse order: joined by id, the same numbers
    with shards.create_dataset(str(tmp_path / "other"), {"B": {"shape": [b.shape[1]], "dtype": "float32"}},
                               columns={"stimulus_id": "string"}) as w:
        w.write_unit(0, {"example_id": np.arange(len(y)), "stimulus_id": np.array(ids[::-1], dtype=object),
                         "B": b[::-1].astype(np.float32)})
    two = run(BandedConfig(data=str(tmp_path / "ds"), hooks=["A"], bands_from=[f"{tmp_path / 'other'}#B"],
                           responses=str(tmp_path / "resp.parquet"), alphas=list(np.logspace(-2, 4, 7)), steps=4,
                           out=str(tmp_path / "out2")))
    assert two.bands == ["A", "other:B"]
    assert [two.r2_split["A"], two.r2_split["other:B"]] == pytest.approx([s.r2_split["A"], s.r2_split["B"]],
                                                                        abs=1e-12)

"""Brain-Score-style scoring (issue 28, item 3) against a re-implementation written here from brain-score/vision's
source (``metrics/regression_correlation/metric.py``: ``CrossRegressedCorrelation`` with ``pls_regression`` and
``pearsonr_correlation``; ``metric_helpers/transformations.py``: ``Split`` defaults; ``metrics/internal_consistency
/ceiling.py``: ``InternalConsistency``, ``SpearmanBrownCorrection``): per split a fresh PLS, scipy's pearsonr
per neuroid, median over neuroids, mean and SEM over splits; the ceiling from repetition halves averaged per
stimulus with pandas. Synthetic responses are planted in layer 2; the stimuli come shuffled and some repetitions
are missing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.stats
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import Ridge
from sklearn.model_selection import ShuffleSplit

import shards
from analysis.align.config import ScoreConfig
from analysis.align.regression_score import internal_consistency, regression_score
from analysis.align.score_run import run as score
from shards.errors import ConfigError

N_STIM, N_NEUROID, N_REP, D = 120, 12, 4, 40


def brainscore_regression(x, y, regression="pls"):
    """CrossRegressedCorrelation.__call__ as Brain-Score runs it (Split.Defaults: 10 splits, train_size .9,
    random_state 1; no stratification coord here)."""
    split_scores = []
    for train, test in ShuffleSplit(n_splits=10, train_size=.9, test_size=None, random_state=1).split(
            np.zeros(len(x))):
        reg = PLSRegression(n_components=25, scale=False) if regression == "pls" else Ridge()
        reg.fit(x[train], y[train])
        pred = reg.predict(x[test])
        rs = [scipy.stats.pearsonr(pred[:, n], y[test][:, n])[0] for n in range(y.shape[1])]
        split_scores.append(np.median(rs))  # aggregate: scores.median(dim='neuroid')
    v = np.array(split_scores)
    return v.mean(), v.std() / math.sqrt(len(v))  # Split.aggregate: mean, standard_error_of_the_mean (ddof 0)


def brainscore_ceiling(long: pd.DataFrame, neuroids: list[str], stimuli: list[str]):
    """InternalConsistency: CrossValidationSingle(train_size=0.5, split_coord='repetition', unique values),
    halves averaged per stimulus, pearsonr per neuroid, Spearman-Brown n=2, median, mean over splits."""
    reps = np.unique(long.repetition.values)
    values = []
    for a, b in ShuffleSplit(n_splits=10, train_size=0.5, test_size=None, random_state=1).split(np.zeros(len(reps))):
        h1 = long[long.repetition.isin(reps[a])].groupby("stimulus_id")[neuroids].mean().reindex(stimuli)
        h2 = long[long.repetition.isin(reps[b])].groupby("stimulus_id")[neuroids].mean().reindex(stimuli)
        ok = h1.notna().all(1) & h2.notna().all(1)
        rs = [scipy.stats.pearsonr(h1[ok][n], h2[ok][n])[0] for n in neuroids]
        values.append(np.median([2 * r / (1 + r) for r in rs]))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("bs")
    # float32 values (what the dataset stores), held as float64 for the reference
    feats = {f"layer.{i}": rng.standard_normal((N_STIM, D)).astype(np.float32).astype(np.float64) for i in range(4)}
    ids = [f"img{i:03d}" for i in range(N_STIM)]
    with shards.create_dataset(str(root / "ds"), {h: {"shape": [D], "dtype": "float32"} for h in feats},
                               columns={"stimulus_id": "string"}) as w:
        w.write_unit(0, {"example_id": np.arange(N_STIM), "stimulus_id": np.array(ids, dtype=object),
                        **{h: f.astype(np.float32) for h, f in feats.items()}})
    signal = np.tanh(feats["layer.2"] @ rng.standard_normal((D, N_NEUROID)) / 3)
    rows = []
    for rep in range(N_REP):
        noisy = signal + 0.5 * rng.standard_normal(signal.shape)
        for s in rng.permutation(N_STIM):  # the table's order is not the dataset's
            rows.append({"stimulus_id": ids[s], "repetition": rep, **{f"n{j}": noisy[s, j] for j in range(N_NEUROID)}})
    long = pd.DataFrame(rows)
    long.loc[long.sample(frac=0.03, random_state=0).index, "n3"] = np.nan  # missing repetitions of one neuroid
    long.to_parquet(root / "responses.parquet")
    return root, feats, long, ids


def test_regression_and_ceiling_equal_brainscores(planted):
    _, feats, long, ids = planted
    neuroids = [f"n{j}" for j in range(N_NEUROID)]
    y = long.groupby("stimulus_id")[neuroids].mean().reindex(ids).to_numpy()
    for regression in ("pls", "ridge"):
        got = regression_score(feats["layer.2"], y, kind=regression)
        want = brainscore_regression(feats["layer.2"], y, regression)
        assert (got.center, got.error) == pytest.approx(want, abs=1e-9), regression
    cube = np.stack([long[long.repetition == r].set_index("stimulus_id")[neuroids].reindex(ids).to_numpy()
                     for r in range(N_REP)])
    assert internal_consistency(cube).center == pytest.approx(brainscore_ceiling(long, neuroids, ids), abs=1e-9)


def test_the_command_commits_the_planted_layer(planted, tmp_path):
    root, feats, long, ids = planted
    s = score(ScoreConfig(data=str(root / "ds"), hooks=["layer.*"], responses=str(root / "responses.parquet"),
                          out=str(tmp_path / "score")))
    assert s.committed["hook"] == "layer.2" and max(s.per_hook, key=lambda h: s.per_hook[h]["score"]) == "layer.2"
    assert s.dropped_values == int(long.n3.isna().sum()) and s.repetitions == N_REP
    neuroids = [f"n{j}" for j in range(N_NEUROID)]
    y = long.groupby("stimulus_id")[neuroids].mean().reindex(ids).to_numpy()
    want, _ = brainscore_regression(feats["layer.2"], y)
    assert s.per_hook["layer.2"]["score"] == pytest.approx(want, abs=1e-9)  # joined by id, not by position
    ceiling = brainscore_ceiling(long, neuroids, ids)
    assert s.ceiling["center"] == pytest.approx(ceiling, abs=1e-9)
    assert s.per_hook["layer.2"]["ceiled"] == pytest.approx(want / ceiling, abs=1e-9)
    t = pq.read_table(tmp_path / "score" / "results.parquet").to_pandas()
    assert list(t.hook) == [f"layer.{i}" for i in range(4)] and (tmp_path / "score" / "score_by_layer.png").exists()
    assert (tmp_path / "score" / "report.html").exists()


def test_bad_responses(planted, tmp_path):
    root = planted[0]
    with pytest.raises(ConfigError, match="--responses"):
        ScoreConfig(data=str(root / "ds"))
    pd.DataFrame({"stimulus_id": ["x"], "n0": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ConfigError, match="neuroid's numbers"):
        score(ScoreConfig(data=str(root / "ds"), hooks=["layer.0"], responses=str(tmp_path / "bad.csv"),
                          out=str(tmp_path / "o")))

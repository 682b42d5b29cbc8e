"""The permutation null of model–model similarity (issue 28, item 5): each metric's fast permuted scores equal
the metric recomputed on permuted rows, and through ``align cka|knn --permutations`` a planted relation gets the
smallest p-value possible while unrelated views do not."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.align.config import CkaConfig, KnnConfig
from analysis.align.knn_run import run as knn_run
from analysis.align.metrics.cka import CkaOptions, cka
from analysis.align.metrics.knn import KnnOptions, mutual_knn
from analysis.align.null import permutation_null, permutations
from analysis.align.pairs_run import run as cka_run
from shards.errors import ConfigError
from tests.unit.analysis.probe_data import planted_probe_dataset


@pytest.fixture
def views():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8))
    y = np.tanh(x @ rng.standard_normal((8, 5))) + 0.3 * rng.standard_normal((60, 5))
    return x, y, permutations(60, 25, seed=3)


@pytest.mark.parametrize("kernel,debiased", [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)])
def test_cka_null_equals_cka_of_permuted_rows(views, kernel, debiased):
    x, y, perms = views
    r = permutation_null("cka", x, y, perms, CkaOptions(kernel=kernel, debiased=debiased))
    brute = np.array([cka(x, y[p], kernel=kernel, debiased=debiased) for p in perms])
    assert r.score == pytest.approx(cka(x, y, kernel=kernel, debiased=debiased), abs=1e-9)
    assert r.null_mean == pytest.approx(brute.mean(), abs=1e-9) and r.null_sd == pytest.approx(brute.std(ddof=1))
    assert r.p_value == pytest.approx((1 + (brute >= r.score - 1e-12).sum()) / 26)


def test_knn_null_equals_knn_of_permuted_rows(views):
    x, y, perms = views
    r = permutation_null("mutual_knn", x, y, perms, KnnOptions(k=5))
    brute = np.array([mutual_knn(x, y[p], k=5) for p in perms])
    assert r.score == pytest.approx(mutual_knn(x, y, k=5), abs=1e-12)
    assert r.null_mean == pytest.approx(brute.mean(), abs=1e-12) and r.permutations == 25


def test_permutation_columns_through_the_commands(tmp_path):
    data = str(tmp_path / "ds")
    planted_probe_dataset(data, examples=40)
    s = cka_run(CkaConfig(data=data, hooks=["resid.2", "resid.3", "embed"], permutations=99, seed=1,
                          out=str(tmp_path / "cka")))
    rows = {(r["hook"], r["hook2"]): r for r in s.pairs}
    planted = rows[("resid.2", "resid.3")]  # both carry the class directions: related far beyond chance
    assert planted["p_value"] == pytest.approx(1 / 100) and planted["score"] > planted["null_mean"] + 5 * planted[
        "null_sd"]
    t = pq.read_table(tmp_path / "cka" / "results.parquet").to_pandas()
    assert {"null_mean", "null_sd", "p_value", "permutations"} <= set(t.columns) and (t.permutations == 99).all()
    k = knn_run(KnnConfig(data=data, hooks=["resid.2", "resid.3"], k=5, permutations=20, out=str(tmp_path / "knn")))
    assert all(0 < r["p_value"] <= 1 for r in k.pairs)
    with pytest.raises(ConfigError, match="--permutations"):
        CkaConfig(data=data, permutations=-1)


def _platonic_cknna(a, b, topk):
    """minyoungg/platonic-rep metrics.AlignmentMetrics.cknna (unbiased, distance-aware), re-written here in torch
    from its source, on unit-normalised rows as its measure_alignment passes them."""
    import torch

    fa = torch.nn.functional.normalize(torch.as_tensor(a, dtype=torch.float64), dim=-1)
    fb = torch.nn.functional.normalize(torch.as_tensor(b, dtype=torch.float64), dim=-1)
    n = fa.shape[0]

    def hsic_unbiased(k, l):  # noqa: E741
        m = k.shape[0]
        kt, lt = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)
        v = (torch.sum(kt * lt.T) + torch.sum(kt) * torch.sum(lt) / ((m - 1) * (m - 2))
             - 2 * torch.sum(torch.mm(kt, lt)) / (m - 2))
        return v / (m * (m - 3))

    def similarity(k, l):  # noqa: E741
        _, ik = torch.topk(k.clone().fill_diagonal_(float("-inf")), topk, dim=1)
        _, il = torch.topk(l.clone().fill_diagonal_(float("-inf")), topk, dim=1)
        mask = (torch.zeros(n, n, dtype=k.dtype).scatter_(1, ik, 1) * torch.zeros(n, n, dtype=k.dtype).scatter_(
            1, il, 1))
        return hsic_unbiased(mask * k, mask * l)

    k, l = fa @ fa.T, fb @ fb.T  # noqa: E741
    return similarity(k, l).item() / (torch.sqrt(similarity(k, k) * similarity(l, l)) + 1e-6).item()


def test_cknna_equals_platonic_rep_and_its_null_equals_permuted_rows(views):
    from analysis.align.metrics.cknna import cknna

    x, y, perms = views
    assert cknna(x, y, k=6) == pytest.approx(_platonic_cknna(x, y, 6), abs=1e-9)
    r = permutation_null("cknna", x, y, perms, KnnOptions(k=6))
    brute = np.array([_platonic_cknna(x, y[p], 6) for p in perms])
    assert r.null_mean == pytest.approx(brute.mean(), abs=1e-9) and r.score == pytest.approx(cknna(x, y, k=6))


def test_knn_command_computes_cknna(tmp_path):
    data = str(tmp_path / "ds")
    planted_probe_dataset(data, examples=30)
    k = knn_run(KnnConfig(data=data, hooks=["resid.2", "resid.3"], k=5, metrics=["mutual_knn", "cknna"],
                          permutations=10, out=str(tmp_path / "knn")))
    methods = {r["method"] for r in k.pairs}
    assert methods == {"mutual_knn", "cknna"} and all(r["permutations"] == 10 for r in k.pairs)
    with pytest.raises(ConfigError, match="--metrics"):
        KnnConfig(data=data, metrics=["cka"])

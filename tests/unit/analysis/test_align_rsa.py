"""RSA against the reference libraries: rsatoolbox (RDM and comparison methods, noise ceilings, transforms,
bootstrap resampling) on random data and on Kriegeskorte's 92-image human/monkey IT RDMs, and Net2Brain's own
RSA results on its 78-image test data (ResNet-18 features, 15 subjects' EVC and IT RDMs)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rsatoolbox as rt
import scipy.io as sio
from rsatoolbox.rdm.transform import geodesic_transform, geotopological_transform
from scipy import stats
from scipy.spatial.distance import pdist, squareform

from analysis.align import compare, noise_ceiling, rdm
from analysis.align.inference import ResampleScorer, bootstrap, permutation_null, permutation_p
from analysis.align.registry import COMPARISONS, get_comparison
from analysis.align.topology import geodesic, geotopological
from analysis.align.vectors import RdmError, average_ranks, condensed
from tests.shared_data import DATA

RSATOOLBOX = {"cosine": "cosine", "pearson": "corr", "spearman": "spearman", "rho_a": "rho-a",
              "kendall_a": "tau-a", "corr_cov": "corr_cov", "cosine_cov": "cosine_cov"}
warnings.filterwarnings("ignore", message="Noise ceiling for tau")


def kriegeskorte():
    supp = sio.loadmat(DATA / "kriegeskorte92" / "Kriegeskorte_Neuron2008_supplementalData.mat")
    fig1 = supp["RDMs_mIT_hIT_fig1"][0]
    monkey, human = (np.asarray(fig1[i]["RDM"], dtype=np.float64).reshape(-1) for i in range(2))
    subj = sio.loadmat(DATA / "kriegeskorte92" / "92_brainRDMs.mat")["RDMs"].reshape(-1, order="F")
    humans = np.stack([np.asarray(c["RDM"], dtype=np.float64) for c in subj])
    return monkey, human, humans


def test_rdm_methods_equal_rsatoolbox_and_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 40))
    ds = rt.data.Dataset(x)
    for method in ("correlation", "euclidean"):
        ref = rt.rdm.calc_rdm(ds, method=method).get_vectors()[0]
        np.testing.assert_allclose(condensed(rdm(x, method)), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(condensed(rdm(x, "cosine")), pdist(x, "cosine"), atol=1e-12)
    np.testing.assert_allclose(condensed(rdm(x, "euclidean", "net2brain")), pdist(x, "euclidean"), atol=1e-9)
    np.testing.assert_allclose(condensed(rdm(x, "correlation", "net2brain")), pdist(x, "correlation"), atol=1e-12)
    # crossnobis: 3 runs of 25 stimuli, rows in mixed order
    y = rng.normal(size=(75, 40)) + np.tile(x, (3, 1))
    conds, runs = np.tile(np.arange(25), 3), np.repeat(np.arange(3), 25)
    perm = rng.permutation(75)
    dsc = rt.data.Dataset(y[perm], obs_descriptors={"c": conds[perm], "r": runs[perm]})
    ref = rt.rdm.calc_rdm(dsc, method="crossnobis", descriptor="c", cv_descriptor="r").get_vectors()[0]
    ours = rdm(y[perm], "crossnobis", conditions=conds[perm], runs=runs[perm])
    np.testing.assert_allclose(condensed(ours), ref, atol=1e-12)
    # repeated rows of one condition are averaged, as calc_rdm(descriptor=...)
    ref = rt.rdm.calc_rdm(dsc, method="correlation", descriptor="c").get_vectors()[0]
    np.testing.assert_allclose(condensed(rdm(y[perm], conditions=conds[perm])), ref, atol=1e-12)


def test_average_ranks_is_rankdata():
    v = np.random.default_rng(1).integers(0, 50, 10_000).astype(np.float64)
    np.testing.assert_array_equal(average_ranks(v), stats.rankdata(v))


@pytest.mark.parametrize("method", sorted(RSATOOLBOX))
def test_comparisons_and_ceilings_equal_rsatoolbox(method):
    rng = np.random.default_rng(2)
    a = rng.random((4, 190))
    b = rng.random((3, 190))
    b[0, :30] = b[0, 0]  # ties
    ref = rt.rdm.compare(rt.rdm.RDMs(a), rt.rdm.RDMs(b), RSATOOLBOX[method])
    np.testing.assert_allclose(compare(a, b, method), ref, rtol=0, atol=1e-9)
    monkey, human, humans = kriegeskorte()
    ref = rt.rdm.compare(rt.rdm.RDMs(monkey[None]), rt.rdm.RDMs(human[None]), RSATOOLBOX[method])[0, 0]
    assert compare(monkey, human, method) == pytest.approx(ref, abs=1e-9)
    nc = rt.inference.boot_noise_ceiling(rt.rdm.RDMs(humans), method=RSATOOLBOX[method])
    np.testing.assert_allclose(noise_ceiling(humans, method), nc, atol=1e-9)


def test_real_it_rdms_agree_and_ceiling_brackets():
    monkey, human, humans = kriegeskorte()
    r = compare(monkey, human, "spearman")
    assert r == pytest.approx(stats.spearmanr(monkey, human).statistic, abs=1e-12)
    assert 0.3 < r < 0.6  # Kriegeskorte et al. 2008: monkey and human IT RDMs match
    lo, hi = noise_ceiling(humans, "spearman")
    assert 0 < lo < hi < 1


def test_net2brain_ceiling_convention_is_squared_mean_rdm():
    it = np.load(DATA / "net2brain78" / "fmri_IT_RDMs.npz")["arr_0"]
    log = json.loads((DATA / "net2brain78" / "noise_ceiling_log.json").read_text())
    lo, hi = noise_ceiling(it, "spearman", convention="net2brain")
    assert lo == pytest.approx(log["fmri_IT_RDMs.npz"]["spearman"]["lnc"], rel=1e-12)
    assert hi == pytest.approx(log["fmri_IT_RDMs.npz"]["spearman"]["unc"], rel=1e-12)


def test_topological_transforms_equal_rsatoolbox():
    rng = np.random.default_rng(3)
    a = rng.random((3, 45)) * np.array([[10.0], [100.0], [2.0]])  # RDMs of different scales
    for i in range(3):  # per-RDM quantiles = rsatoolbox on that RDM alone
        ref = geotopological_transform(rt.rdm.RDMs(a[i:i + 1].copy()), 0.1, 0.8).get_vectors()
        np.testing.assert_allclose(geotopological(a[i:i + 1], 0.1, 0.8), ref, atol=1e-12)
    pooled = geotopological_transform(rt.rdm.RDMs(a.copy()), 0.1, 0.8).get_vectors()
    np.testing.assert_allclose(geotopological(a, 0.1, 0.8, pooled=True), pooled, atol=1e-12)
    assert not np.allclose(geotopological(a, 0.1, 0.8), pooled)  # pooling clips the small-scale RDM to 0
    gt = geotopological(a, 0.1, 0.8)
    ref = geodesic_transform(rt.rdm.RDMs(gt.copy())).get_vectors()
    np.testing.assert_allclose(geodesic(gt), ref, atol=1e-12)


def test_geotopological_is_the_papers_piecewise_map_below_one():
    """rsatoolbox 0.3.2 rescales the middle band in place and then sets everything above the upper quantile
    to 1, so with an upper quantile below 1 (correlation distances) rescaled values above it become 1 too;
    the transform here is the piecewise-linear map of Lin & Kriegeskorte."""
    v = np.random.default_rng(5).random((1, 45))
    lo, hi = np.quantile(v, 0.1), np.quantile(v, 0.8)
    expected = np.clip((v - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(geotopological(v, 0.1, 0.8), expected, atol=1e-12)
    assert not np.allclose(geotopological_transform(rt.rdm.RDMs(v.copy()), 0.1, 0.8).get_vectors(), expected)


@pytest.mark.parametrize("method", ["spearman", "pearson", "cosine", "kendall_a"])
def test_bootstrap_resample_equals_rsatoolbox_subsample(method):
    """A stimulus resample scored as rsatoolbox scores it: subsample_pattern (copies of one stimulus NaN)."""
    rng = np.random.default_rng(4)
    n = 20
    model, subjects = rng.random(n * (n - 1) // 2), rng.random((3, n * (n - 1) // 2))
    model[:15] = model[0]
    picks = np.sort(rng.integers(0, n, n))
    counts = np.bincount(picks, minlength=n)
    ours = ResampleScorer(model, subjects, method).scores(counts)
    m = rt.rdm.RDMs(model[None]).subsample_pattern("index", picks)
    s = rt.rdm.RDMs(subjects).subsample_pattern("index", picks)
    ref = rt.rdm.compare(m, s, RSATOOLBOX[method])[0]
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_bootstrap_and_permutations():
    monkey, human, humans = kriegeskorte()
    subj = condensed(humans)
    boot = bootstrap(condensed(human), subj, "spearman", 50, seed=1)
    again = bootstrap(condensed(human), subj, "spearman", 50, seed=1)
    np.testing.assert_array_equal(boot, again)  # seeded: two models get the same resamples
    obs = compare(human, humans, "spearman").mean()
    assert np.quantile(boot, 0.025) < obs < np.quantile(boot, 0.975)
    null = permutation_null(condensed(human), subj, "spearman", 99, seed=0)
    assert permutation_p(obs, null) == pytest.approx(0.01)  # the real RDM beats every relabelling
    assert abs(null.mean()) < 0.05
    generic = permutation_null(condensed(human), subj, "kendall_a", 5, seed=0)
    assert np.all(np.abs(generic) < 0.2)
    # the fast path (embedding permuted) equals scoring each permuted RDM
    fast = permutation_null(condensed(monkey), subj, "pearson", 5, seed=3)
    rng, sq = np.random.default_rng(3), squareform(monkey)
    slow = [get_comparison("pearson").score(condensed(sq[p][:, p])[None], subj)[0].mean()
            for p in (rng.permutation(92) for _ in range(5))]
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_every_comparison_is_registered_with_its_rsatoolbox_name():
    assert {c.rsatoolbox_name for c in COMPARISONS.values()} == set(RSATOOLBOX.values())


def test_bad_rdms_are_refused():
    from analysis.align.vectors import check_rdm_stack

    with pytest.raises(RdmError, match="not square"):
        check_rdm_stack(np.zeros((2, 4, 5)), "x")
    with pytest.raises(RdmError, match="subject axis last"):
        check_rdm_stack(np.zeros((10, 10, 4)), "x")
    with pytest.raises(RdmError, match="at least 3"):
        check_rdm_stack(np.zeros((2, 2)), "x")
    with pytest.raises(RdmError, match="repeated measurements"):
        rdm(np.zeros((5, 3)), "crossnobis")
    with pytest.raises(RdmError, match="at least 2 runs"):
        rdm(np.random.default_rng(0).random((5, 3)), "crossnobis", conditions=np.arange(5), runs=np.zeros(5))

"""actlake stats: every exact statistic against numpy / scipy / scikit-learn in float64 on the same rows, the
sampled ones against their reference on the sampled rows, planted effects found, bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.spatial.distance import cdist

from analysis.geometry import lac_voids
from analysis.geometry.config import StatsConfig
from analysis.geometry.run import run
from shards.errors import ActlakeError, ConfigError
from tests.unit.analysis.geometry_data import (
    CLASSES,
    MASSIVE_DIM,
    MASSIVE_TOKEN,
    MASSIVE_VALUE,
    planted_geometry_arrays,
    planted_geometry_dataset,
)

HOOKS = ["embed", "resid.0", "resid.1", "resid.2", "resid.3", "mlp_hidden.1"]


def _run(data, out, **kw):
    kw.setdefault("hooks", HOOKS)
    kw.setdefault("label", "label")
    kw.setdefault("sample", 100000)  # every row: the sampled statistics become comparable exactly
    return run(StatsConfig(data=str(data), out=str(out), massive_ratio=20, **kw))


def _table(out, name):
    return pq.read_table(out / name).to_pandas()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(dataset path, float64 arrays as stored, stats output of a full run), float16 storage."""
    root = tmp_path_factory.mktemp("geometry")
    ds = planted_geometry_dataset(str(root / "ds"), dtype="float16")
    arrays = {h: ds.to_numpy(h).astype(np.float64) for h in ds.hooks}
    arrays["label"] = np.asarray(ds.metadata_table(["label"]).column("label").to_pylist())
    arrays.update({c: ds.metadata_table([c]).column(c).to_numpy() for c in ("position", "token_id", "example_id")})
    _run(root / "ds", root / "out")
    return root / "ds", arrays, root / "out"


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def test_exact_statistics_equal_numpy_on_the_float16_values(planted):
    _, arr, out = planted
    stats = _table(out, "stats.parquet").set_index("hook")
    per_dim = _table(out, "per_dim.parquet")
    for h in HOOKS:
        x = arr[h]
        nrm = np.linalg.norm(x, axis=1)
        row = stats.loc[h]
        assert rel(row.mean_norm, nrm.mean()) < 1e-9 and rel(row.std_norm, nrm.std()) < 1e-9
        assert rel(row.norm_p95, np.percentile(nrm, 95)) < 1e-9
        lam = np.linalg.eigvalsh(np.cov(x.T))[::-1]
        assert rel(row.total_variance, lam.sum()) < 1e-9
        p = np.clip(lam, 0, None) / np.clip(lam, 0, None).sum()
        assert rel(row.effective_rank, np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())) < 1e-9
        assert rel(row.participation_ratio, lam.sum() ** 2 / (lam**2).sum()) < 1e-9
        u = x / nrm[:, None]
        cos = u @ u.T
        assert abs(row.anisotropy - (cos.sum() - len(x)) / (len(x) * (len(x) - 1))) < 1e-9
        assert rel(row.sparsity, (np.abs(x) <= 1e-6).mean()) < 1e-12
        mine = per_dim[per_dim.hook == h].sort_values("dim")
        np.testing.assert_allclose(mine["mean"], x.mean(0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(mine["variance"], x.var(0, ddof=1), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(mine["max_abs"], np.abs(x).max(0))
    prev = arr["resid.1"]
    cur = arr["resid.2"]
    cos = (prev * cur).sum(1) / np.linalg.norm(prev, axis=1) / np.linalg.norm(cur, axis=1)
    assert rel(stats.loc["resid.2", "change_cos"], (1 - cos).mean()) < 1e-9
    assert stats.loc["resid.2", "change_from"] == "resid.1"
    h = arr["mlp_hidden.1"]
    assert rel(stats.loc["mlp_hidden.1", "non_positive"], (h <= 0).mean()) < 1e-12
    assert 0.45 < stats.loc["mlp_hidden.1", "non_positive"] < 0.55


def test_cluster_indices_equal_scikit_learn(planted):
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    _, arr, out = planted
    stats = _table(out, "stats.parquet").set_index("hook")
    y = arr["label"]
    for h in ("resid.1", "resid.2"):
        x = arr[h]
        row = stats.loc[h]
        assert rel(row.calinski_harabasz, calinski_harabasz_score(x, y)) < 1e-9
        assert rel(row.silhouette, silhouette_score(x, y)) < 1e-9
        assert rel(row.davies_bouldin, davies_bouldin_score(x, y)) < 1e-9
        cents = np.stack([x[y == c].mean(0) for c in CLASSES])
        within = sum(((x[y == c] - cents[i]) ** 2).sum() for i, c in enumerate(CLASSES))
        sep = min(((cents[i] - cents[j]) ** 2).sum() for i in range(3) for j in range(3) if i != j)
        assert rel(row.xie_beni, within / (len(x) * sep)) < 1e-9
        d = cdist(x, x)
        same = y[:, None] == y[None, :]
        assert rel(row.dunn, d[~same].min() / d[same].max()) < 1e-9
    # classes separate from resid.2 on, not before
    assert stats.loc["resid.2", "silhouette"] > 0.3 > stats.loc["resid.1", "silhouette"]
    assert stats.loc["resid.2", "aqi"] > stats.loc["resid.1", "aqi"]


def test_planted_rank_intrinsic_dimension_and_twonn_reference(planted):
    import skdim

    _, arr, out = planted
    stats = _table(out, "stats.parquet").set_index("hook")
    assert 2.9 < stats.loc["resid.1", "effective_rank"] <= 3.0 + 1e-6
    assert 2.9 < stats.loc["resid.1", "participation_ratio"] <= 3.0 + 1e-6
    assert 2.5 < stats.loc["resid.1", "twonn_id"] < 3.5
    ref = skdim.id.TwoNN().fit(arr["resid.1"]).dimension_
    assert abs(stats.loc["resid.1", "twonn_id"] - ref) < 1e-6


def test_planted_massive_activation_found(planted):
    _, arr, out = planted
    massive = _table(out, "massive.parquet")
    top = massive[massive.hook == "resid.2"]
    first = top.iloc[0]
    assert (first.dim, first.position, first.token_id, first.value) == (MASSIVE_DIM, 0, MASSIVE_TOKEN, MASSIVE_VALUE)
    assert set(top[top.massive].dim) == {MASSIVE_DIM}
    x = arr["resid.2"]
    assert np.allclose(np.sort(np.abs(top.value))[::-1], np.sort(np.abs(x).ravel())[::-1][:len(top)])
    stats = _table(out, "stats.parquet").set_index("hook")
    assert stats.loc["resid.2", "massive_dims"] == 1 and stats.loc["resid.2", "massive_dim_list"] == str(MASSIVE_DIM)
    assert stats.loc["resid.1", "massive_dims"] == 0


def _lac_loop(norms: np.ndarray, alpha: float) -> np.ndarray:
    """The rule written as the paper's code runs it, token by token, layer by layer."""
    layers, n = norms.shape[0] - 1, norms.shape[1]
    out = np.zeros((layers, n), bool)
    for t in range(n):
        deltas = []
        for layer in range(layers):
            d = norms[layer + 1, t] - norms[layer, t]
            thr = alpha * (max(deltas) - min(deltas)) if deltas else 0.0
            out[layer, t] = d < thr
            deltas.append(d)
    return out


def test_void_rule_and_planted_void(planted):
    rng = np.random.default_rng(1)
    norms = np.abs(rng.standard_normal((7, 300))).cumsum(0) * rng.choice([1, -1], (7, 300)) + 20
    np.testing.assert_array_equal(lac_voids(norms, 0.8), _lac_loop(norms, 0.8))
    _, arr, out = planted
    stats = _table(out, "stats.parquet").set_index("hook")
    chain = ["embed", "resid.0", "resid.1", "resid.2", "resid.3"]
    expect = _lac_loop(np.stack([np.linalg.norm(arr[h], axis=1) for h in chain]), 0.8).mean(1)
    np.testing.assert_allclose(stats.loc[chain[1:], "void_fraction"], expect, atol=1e-12)
    assert stats.loc["resid.3", "void_fraction"] == 1.0  # the layer that changes nothing
    assert stats.loc["resid.1", "void_fraction"] == 0.0
    assert stats.loc["resid.3", "change_cos"] < 1e-9


def test_depth_efficiency_of_planted_sublayers(planted):
    _, _, out = planted
    stats = _table(out, "stats.parquet").set_index("hook")
    assert abs(stats.loc["resid.1", "depth_rel_contribution"] - 1.0) < 2e-3  # float16 rounding of the parts
    assert abs(stats.loc["resid.1", "depth_cos"] - 1.0) < 1e-5


def test_summary_plots_and_per_position(planted):
    _, _, out = planted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["statistics"]["effective_rank"]["exact"] is True
    assert summary["statistics"]["twonn_id"] == {**summary["statistics"]["twonn_id"], "exact": False,
                                                 "sample_size": 1200}
    assert summary["dataset"]["version"] >= 1 and summary["dataset"]["dataset_id"]
    for png in ("norms.png", "sparsity.png", "spectrum.png", "massive.png", "clusters.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    pos = _table(out, "norms_by_position.parquet")
    embed = pos[pos.hook == "embed"]
    assert embed.rows.sum() == 1200 and list(embed.position_lo) == [0, 1, 2, 4]
    _, arr, _ = planted
    nrm = np.linalg.norm(arr["embed"], axis=1)
    first = nrm[arr["position"] == 0]
    row = embed[embed.position_lo == 0].iloc[0]
    assert rel(row.mean_norm, first.mean()) < 1e-9 and rel(row.norm_p50, np.median(first)) < 1e-9


def test_streamed_equals_in_memory_across_batches_and_units(tmp_path):
    ds_path = tmp_path / "ds"
    planted_geometry_dataset(str(ds_path), dtype="float32", units=5, examples=60)
    _run(ds_path, tmp_path / "a", batch_size=7, hooks=["resid.1", "resid.2"])
    _run(ds_path, tmp_path / "b", batch_size=100000, hooks=["resid.1", "resid.2"])
    a, b = _table(tmp_path / "a", "stats.parquet"), _table(tmp_path / "b", "stats.parquet")
    for col in ("mean_norm", "effective_rank", "calinski_harabasz", "xie_beni", "anisotropy", "change_cos"):
        np.testing.assert_allclose(a[col].astype(float), b[col].astype(float), rtol=1e-10, equal_nan=True)


def test_rerun_is_done_and_killed_run_resumes(tmp_path):
    ds_path = tmp_path / "ds"
    planted_geometry_dataset(str(ds_path), examples=40)
    first = _run(ds_path, tmp_path / "out", hooks=["resid.0", "resid.1"])
    assert _run(ds_path, tmp_path / "out", hooks=["resid.0", "resid.1"]).values == first.values
    (tmp_path / "out" / "summary.json").unlink()
    (tmp_path / "out" / "hooks" / "resid.1.json").unlink()  # as if killed during resid.1
    again = _run(ds_path, tmp_path / "out", hooks=["resid.0", "resid.1"])
    assert again.values == first.values
    with pytest.raises(ActlakeError, match="different run"):
        _run(ds_path, tmp_path / "out", hooks=["resid.0", "resid.1"], seed=3)


def test_bad_input_is_refused_before_work(tmp_path):
    ds_path = tmp_path / "ds"
    planted_geometry_dataset(str(ds_path), examples=20)
    with pytest.raises(ConfigError, match="unknown statistic 'spectra'.*Did you mean 'spectrum'.*norms, sparsity"):
        StatsConfig(data=str(ds_path), stats=["spectra"])
    with pytest.raises(ConfigError, match="--label COLUMN"):
        StatsConfig(data=str(ds_path), stats=["clusters"])
    with pytest.raises(ActlakeError, match="no such column; its columns are"):
        _run(ds_path, tmp_path / "o1", label="colour")
    with pytest.raises(ActlakeError, match="logit_lens.*no unembedding.*--save-unembed"):
        _run(ds_path, tmp_path / "o2", stats=["logit_lens"], hooks=["embed", "resid.*"])
    # ALBERT-like: embeddings narrower than the residual stream, so there is no "change" from embed to resid.0
    import shards

    rng = np.random.default_rng(0)
    with shards.create_dataset(str(tmp_path / "albert"), {"embed": {"shape": [8], "dtype": "float32"},
                                                          "resid.0": {"shape": [16], "dtype": "float32"},
                                                          "resid.1": {"shape": [16], "dtype": "float32"}}) as w:
        w.write_unit(0, {"example_id": np.arange(50), "position": np.zeros(50, np.int32),
                         "token_id": np.zeros(50, np.int32), "embed": rng.standard_normal((50, 8), np.float32),
                         "resid.0": rng.standard_normal((50, 16), np.float32),
                         "resid.1": rng.standard_normal((50, 16), np.float32)})
    with pytest.raises(ActlakeError, match=r"embed \(8\) and resid.0 \(16\) differ in width"):
        _run(tmp_path / "albert", tmp_path / "o3", stats=["norms"], hooks=["embed", "resid.*"], label=None)
    assert not (tmp_path / "o3" / "hooks").exists()  # refused before any hook was read
    done = _run(tmp_path / "albert", tmp_path / "o4", hooks=["embed", "resid.*"], label=None)
    assert any("layer change skipped between embed (8) and resid.0 (16)" in n for n in done.notes)
    assert done.values["resid.1"]["change_from"] == "resid.0"


def test_aqi_on_a_tsne_embedding_is_an_explicit_option():
    from types import SimpleNamespace

    from analysis.geometry import cluster_indices
    from analysis.geometry.clusters import _tsne_aqi

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 60)
    x = rng.standard_normal((180, 10)) + np.eye(3, 10)[y] * 8  # well separated
    mixed = rng.standard_normal((180, 10))
    sep, noise = _tsne_aqi(SimpleNamespace(x=x, label=y), 0.5, 0), _tsne_aqi(SimpleNamespace(x=mixed, label=y), 0.5, 0)
    assert sep > noise and sep > 0.5
    raw = cluster_indices(x, y)
    assert 0 < raw["aqi"] <= 1 and raw["aqi"] > cluster_indices(mixed, y)["aqi"]
    assert StatsConfig(data="x", aqi_space="tsne").aqi_space == "tsne"


def test_planted_arrays_are_what_the_docstring_says():
    a = planted_geometry_arrays(examples=10)
    np.testing.assert_allclose(a["attn.1"] + a["mlp.1"], a["resid.1"] - a["resid.0"])
    assert np.linalg.matrix_rank(a["resid.1"] - a["resid.1"].mean(0)) == 3


def test_davies_bouldin_is_exact_over_all_rows_beyond_the_sample(tmp_path):
    """Davies–Bouldin in two streaming passes (centroids, then distances to them) equals scikit-learn's over every
    row, not over the seeded sample (here 1,000 of 24,000 rows)."""
    from sklearn.metrics import davies_bouldin_score

    ds = planted_geometry_dataset(str(tmp_path / "ds"), examples=4000, units=4)
    run(StatsConfig(data=ds.uri, hooks=["resid.1", "resid.2"], stats=["clusters"], label="label", sample=1000,
                    out=str(tmp_path / "out")))
    stats = _table(tmp_path / "out", "stats.parquet").set_index("hook")
    y = np.asarray(ds.metadata_table(["label"]).column("label").to_pylist())
    for h in ("resid.1", "resid.2"):
        x = ds.to_numpy(h).astype(np.float64)
        assert len(x) == 24000
        assert rel(stats.loc[h, "davies_bouldin"], davies_bouldin_score(x, y)) < 1e-9
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["statistics"]["davies_bouldin"]["exact"] is True

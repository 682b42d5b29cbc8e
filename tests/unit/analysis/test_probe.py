"""actlake probe on planted datasets: the right hooks decode, parity with scikit-learn on the same folds, no
leakage across groups, controls, joined and pooled labels, streaming, resume, and bad input refused up front."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from analysis.probe.config import ProbeConfig
from analysis.probe.cost import sample_plan
from analysis.probe.features import load_features
from analysis.probe.hookfit import search_view
from analysis.probe.problems import ProbeData, outer_fits, search_fits
from analysis.probe.registry import SolverOptions, get_probe
from analysis.probe.run import run
from analysis.probe.targets import plan_probe
from cluster.cli import main
from tests.unit.analysis.probe_data import CLASSES, planted_probe_dataset


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    ds, labels = planted_probe_dataset(str(tmp_path_factory.mktemp("planted") / "ds"))
    return ds


def _cfg(ds, out, **kw) -> ProbeConfig:
    return ProbeConfig(data=ds.uri, out=str(out), **{"hooks": ["embed", "resid.*"], **kw})


def test_planted_label_found_in_exactly_the_right_hooks(planted, tmp_path):
    s = run(_cfg(planted, tmp_path / "out", control="shuffle"))
    means = {h: v["mean"] for h, v in s.hooks.items()}
    assert list(means) == ["embed", "resid.0", "resid.1", "resid.2", "resid.3"]  # layer order
    assert means["resid.2"] >= 0.95 and means["resid.3"] >= 0.95
    for h in ("embed", "resid.0", "resid.1"):
        assert means[h] < 0.45  # chance is 1/3
    assert s.concept_depth["hook"] == "resid.2" and s.concept_depth["layer_index"] == 2
    assert s.hooks["resid.2"]["control_mean"] < 0.45
    assert s.hooks["resid.2"]["selectivity"] == pytest.approx(means["resid.2"] - s.hooks["resid.2"]["control_mean"])
    assert s.classes == CLASSES and s.task == "classify" and s.rows_used == planted.num_rows
    table = pq.read_table(tmp_path / "out" / "probe_results.parquet")
    assert table.column_names == ["hook", "layer_index", "fold", "n_train", "n_test", "metric", "value",
                                  "control_value", "reg"]
    assert table.num_rows == 5 * 5 and set(table.column("metric").to_pylist()) == {"accuracy"}
    rows = table.to_pylist()
    assert all(r["n_train"] + r["n_test"] == planted.num_rows for r in rows)
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["dataset"]["dataset_id"] == planted.dataset_id and on_disk["hooks"]["resid.3"]["ci95"][0] <= 1.0
    assert (tmp_path / "out" / "probe_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    directions = load_file(str(tmp_path / "out" / "directions.safetensors"))
    assert directions["resid.2/probe"].shape == (3, 16) and directions["resid.2/probe"].dtype == torch.float32
    # the diff-in-means direction of a class is the planted class direction, up to noise
    x = planted.to_numpy("resid.2").astype(np.float64)
    y = np.array(planted.metadata_table(["label"]).column("label").to_pylist())
    want = x[y == "b"].mean(0) - x[y != "b"].mean(0)
    np.testing.assert_allclose(directions["resid.2/diffmean/b"].numpy(), want, rtol=1e-4, atol=1e-4)


def _standardized(ds, hook):
    st = ds.stats(hook)
    return (ds.to_numpy(hook).astype(np.float64) - st.mean) / st.std


@pytest.mark.parametrize("label", ["label", "binary"])
def test_logistic_equals_scikit_learn_on_the_same_folds(planted, tmp_path, label):
    from sklearn.linear_model import LogisticRegression

    cfg = _cfg(planted, tmp_path / "o", hooks=["resid.1"], reg=["40"], label="label")
    plan = plan_probe(cfg, planted)
    y = plan.y if label == "label" else (plan.y == 0).astype(np.int64)  # binary: one sigmoid column, as sklearn
    n_classes = 3 if label == "label" else 2
    feats = load_features(planted, "resid.1", plan, 1 << 30)
    fits = outer_fits(plan.folds, [40.0] * plan.folds, False, None)
    res = get_probe("logistic").fit(feats, ProbeData(plan.fold, y[:, None], n_classes), fits,
                                    SolverOptions(max_iter=1000, tol=1e-7))
    xs = _standardized(planted, "resid.1")
    std = planted.stats("resid.1").std
    for f in range(plan.folds):
        tr, te = plan.fold != f, plan.fold == f
        ref = LogisticRegression(C=1 / 40.0, max_iter=5000, tol=1e-10).fit(xs[tr], y[tr])
        assert abs(ref.score(xs[te], y[te]) - res.scores[f]) <= 0.005
        ours, theirs = res.weights[f].numpy().ravel(), (ref.coef_ / std).ravel()  # both in the stored values' space
        assert ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs) >= 0.999


def test_ridge_equals_scikit_learn_to_1e6(planted, tmp_path):
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    s = run(_cfg(planted, tmp_path / "o", hooks=["resid.2"], label="score", reg=["25"]))
    assert s.task == "regress" and s.probe == "ridge" and s.metric == "r2"
    plan = plan_probe(_cfg(planted, tmp_path / "o", hooks=["resid.2"], label="score", reg=["25"]), planted)
    xs = _standardized(planted, "resid.2")
    values = pq.read_table(tmp_path / "o" / "probe_results.parquet").column("value").to_pylist()
    for f in range(plan.folds):
        tr, te = plan.fold != f, plan.fold == f
        ref = Ridge(alpha=25.0).fit(xs[tr], plan.y[tr])
        assert values[f] == pytest.approx(r2_score(plan.y[te], ref.predict(xs[te])), abs=1e-6)
    assert min(values) > 0.9


def test_grouped_folds_do_not_leak_tokens_of_one_example(tmp_path):
    ds, _ = planted_probe_dataset(str(tmp_path / "leak"), leak=True, examples=90, tokens=8, d=128)
    grouped = run(_cfg(ds, tmp_path / "g", hooks=["resid.0"], reg=["1"]))
    ungrouped = run(_cfg(ds, tmp_path / "u", hooks=["resid.0"], reg=["1"], group_by="row_id"))
    assert grouped.hooks["resid.0"]["mean"] < 0.45  # chance (1/3): an example's tokens never straddle folds
    assert ungrouped.hooks["resid.0"]["mean"] > 0.8  # what per-token folds would have reported
    plan = plan_probe(_cfg(ds, tmp_path / "g", hooks=["resid.0"]), ds)
    ex = ds.metadata_table(["example_id"]).column("example_id").to_numpy()[plan.rows]
    for e in np.unique(ex):
        assert len(np.unique(plan.fold[ex == e])) == 1


def test_type_control_labels_each_token_type_once(planted, tmp_path):
    cfg = _cfg(planted, tmp_path / "o", control="type")
    plan = plan_probe(cfg, planted)
    tokens = planted.metadata_table(["token_id"]).column("token_id").to_numpy()[plan.rows]
    for t in np.unique(tokens):
        assert len(np.unique(plan.control[tokens == t])) == 1
    freq = np.bincount(plan.control, minlength=3) / len(plan.control)
    assert freq.min() > 0.0 and set(np.unique(plan.control)) <= {0, 1, 2}


def test_type_control_said_to_be_memorisable_when_types_fit_the_dims(planted, tmp_path):
    """50 token types: a linear probe can give each its own label in 64 dims, not in 16 (planted's d)."""
    cfg = _cfg(planted, tmp_path / "o", control="type")
    assert not any("--control type" in n for n in plan_probe(cfg, planted, dims=16).notes)
    note = next(n for n in plan_probe(cfg, planted, dims=64).notes if "--control type" in n)
    assert "50 token types" in note and "64 dims" in note and "100% of test items" in note
    assert "--control shuffle" in note and "one per group" in note  # planted's label is one per example


def test_cost_is_estimated_logged_and_recorded(planted, tmp_path, caplog):
    with caplog.at_level("INFO", logger="actlake.probe"):
        s = run(_cfg(planted, tmp_path / "o", hooks=["resid.1", "resid.2"], control="shuffle", reg_search_rows=600))
    plan = plan_probe(_cfg(planted, tmp_path / "o", reg_search_rows=600), planted)
    searched = int(plan.search.sum())
    work = (f"2 hooks × 1,800 rows × 16 dims × 3 classes × (60 search fits on {searched:,} rows: 5 folds × 3 inner "
            "× 4 penalties; 5 folds + 5 controls + 1 final)")
    assert 0 < searched < 1800 and s.cost["work"] == work
    assert s.cost["estimated_seconds"] > 0 and s.cost["seconds"] > 0
    assert s.cost["basis"].startswith("timed sample: 1,800 of 1,800 items") and "passes" in s.cost["basis"]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("will compute")]
    assert len(logged) == 1 and logged[0].startswith(f"will compute {work}; estimated ~")
    on_disk = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert on_disk["cost"] == s.cost
    fixed = run(_cfg(planted, tmp_path / "f", hooks=["resid.2"], reg=["1"]))
    assert fixed.cost["work"] == "1 hook × 1,800 rows × 16 dims × 3 classes × (5 folds + 1 final)"


def test_search_on_its_subsample_alone_equals_the_masked_search(planted, tmp_path):
    """The penalty search passes over its subsample's items only: the same fits as over every item with the
    others masked out (to the solver's float32 precision: neither reaches a gradient of 1e-8)."""
    cfg = _cfg(planted, tmp_path / "o", reg_search_rows=700)
    plan = plan_probe(cfg, planted)
    feats = load_features(planted, "resid.2", plan, 1 << 30)
    data = ProbeData(plan.fold, plan.targets(), plan.n_classes, plan.search)
    fits = search_fits(data, [0.3, 3.0, 30.0, 300.0], plan.folds)
    opts = SolverOptions(max_iter=1000, tol=1e-8)
    kind = get_probe("logistic")
    masked, alone = kind.fit(feats, data, fits, opts), kind.fit(*search_view(feats, data), fits, opts)
    assert search_view(feats, data)[0].n == int(plan.search.sum()) < plan.n_items
    np.testing.assert_allclose(alone.scores, masked.scores, atol=1e-9)
    for a, b in zip(alone.weights, masked.weights, strict=True):
        a, b = a.numpy().ravel(), b.numpy().ravel()
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.99999


def test_cost_sample_is_whole_groups_with_the_plans_folds(planted, tmp_path):
    plan = plan_probe(_cfg(planted, tmp_path / "o", control="type"), planted)
    sub = sample_plan(plan, 500)
    ex = planted.metadata_table(["example_id"]).column("example_id").to_numpy()
    assert sub.n_items == 504 and set(ex[sub.rows]) == set(range(84))  # 84 whole examples of 6 tokens: a prefix
    keep = np.isin(plan.groups, np.unique(sub.groups))
    np.testing.assert_array_equal(sub.fold, plan.fold[keep])
    np.testing.assert_array_equal(sub.control, plan.control[keep])
    assert sample_plan(plan, 5000) is plan


def test_token_labels_joined_from_a_table_and_pooled_probing(planted, tmp_path):
    meta = planted.metadata_table(["example_id", "position", "tok_parity"])
    table = pa.table({"example_id": meta.column("example_id"), "position": meta.column("position"),
                      "pos_tag": pa.array(["odd" if p else "even" for p in meta.column("tok_parity").to_pylist()])})
    pcsv.write_csv(table, tmp_path / "tags.csv")
    s = run(_cfg(planted, tmp_path / "tok", hooks=["resid.0", "resid.2"], labels=str(tmp_path / "tags.csv"),
                 on="example_id,position", label="pos_tag", reg=["1"]))
    assert s.classes == ["even", "odd"] and s.hooks["resid.2"]["mean"] > 0.95 and s.hooks["resid.0"]["mean"] < 0.65
    pooled = run(_cfg(planted, tmp_path / "pool", hooks=["resid.0", "resid.3"], pool="mean", reg=["1"]))
    assert pooled.items == 300 and pooled.rows_used == planted.num_rows and pooled.pool == "mean"
    assert pooled.hooks["resid.3"]["mean"] > 0.95 and pooled.hooks["resid.0"]["mean"] < 0.5
    last = run(_cfg(planted, tmp_path / "last", hooks=["resid.3"], pool="last", reg=["1"]))
    assert last.items == 300 and last.rows_used == 300


def test_streaming_minibatch_matches_full_batch(planted, tmp_path):
    full = run(_cfg(planted, tmp_path / "full", hooks=["resid.2", "resid.1"], reg=["1"]))
    streamed = run(_cfg(planted, tmp_path / "stream", hooks=["resid.2", "resid.1"], reg=["1"], memory_budget="1000"))
    record = json.loads((tmp_path / "stream" / "hooks" / "resid.2.json").read_text())
    assert record["solver"]["solver"] == "minibatch-adam"
    for h in ("resid.2", "resid.1"):
        assert streamed.hooks[h]["mean"] == pytest.approx(full.hooks[h]["mean"], abs=0.03)


def test_rerun_skips_finished_hooks(planted, tmp_path, caplog):
    cfg = _cfg(planted, tmp_path / "o", reg=["1"])
    first = run(cfg)
    hooks_dir = tmp_path / "o" / "hooks"
    (tmp_path / "o" / "summary.json").unlink()  # as if killed after three hooks
    for h in ("resid.2", "resid.3"):
        (hooks_dir / f"{h}.json").unlink()
    kept = (hooks_dir / "embed.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="actlake.probe"):
        second = run(cfg)
    assert "resuming: 3 of 5 hooks already probed" in caplog.text
    assert (hooks_dir / "embed.json").stat().st_mtime_ns == kept
    assert second.hooks == first.hooks
    assert run(cfg).hooks == first.hooks  # done: returned as written


def _fails(argv, capsys) -> str:
    assert main(["probe", *argv]) == 2
    return capsys.readouterr().err


def test_bad_input_is_refused_before_any_work(planted, tmp_path, capsys):
    base = ["--data", planted.uri, "--out", str(tmp_path / "bad")]
    err = _fails([*base, "--label", "colour"], capsys)
    assert "label column 'colour'" in err and "'label'" in err and "'score'" in err  # lists the columns
    one = tmp_path / "one.csv"
    pcsv.write_csv(pa.table({"example_id": np.arange(300), "kind": ["x"] * 300}), one)
    assert "single class" in _fails([*base, "--labels", str(one), "--label", "kind"], capsys)
    some = tmp_path / "some.csv"
    pcsv.write_csv(pa.table({"example_id": np.arange(250), "kind": ["x", "y"] * 125}), some)
    err = _fails([*base, "--labels", str(some), "--label", "kind"], capsys)
    assert "no row for 50 of" in err and "250" in err and "--allow-missing-labels" in err
    err = _fails([*base, "--hooks", "resid.9"], capsys)
    assert "unknown hook 'resid.9'" in err and "resid.0" in err
    err = _fails([*base, "--folds", "5", "--max-rows", "18"], capsys)  # 3 examples of 6 tokens
    assert "only 3 distinct example_id" in err and "--folds" in err
    err = _fails([*base, "--label", "label", "--task", "regress"], capsys)
    assert "regress" in err and "not numbers" in err
    err = _fails([*base, "--label", "score", "--probe", "logistic"], capsys)
    assert "--probe ridge" in err
    assert not (tmp_path / "bad" / "hooks").exists()
    ok = run(_cfg(planted, tmp_path / "allowed", hooks=["resid.2"], labels=str(some), label="kind", reg=["1"],
                  allow_missing_labels=True))
    assert ok.items == 250 * 6

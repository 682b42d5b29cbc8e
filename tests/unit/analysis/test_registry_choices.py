"""Choices and options come from the registries: every registered method is a CLI choice, its options are flags
of the commands that use it, a method's options given for another method are refused, and a metric registered
from outside runs through the same pair runner as CKA and k-NN. A metric with its null is one new file; a file that
registers a taken name fails at import (issue 37, item 4)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys

import numpy as np
import pytest

from analysis.align.config import CkaConfig, KnnConfig, RsaConfig
from analysis.align.registry import COMPARISONS, CONVENTIONS, METRICS, RDM_METHODS, TRANSFORMS, AlignmentMetric
from analysis.geometry.registry import STATISTICS, Statistic, statistic_names
from analysis.probe.registry import PROBES
from cluster.cli import main
from shards.errors import ConfigError
from shards.registry import DuplicateNameError
from tests.unit.analysis.pinning import stimulus_dataset


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_cli_choices_are_the_registries(capsys):
    rsa = _help(capsys, "align", "rsa")
    for flag, table in (("--rdm", RDM_METHODS), ("--compare", COMPARISONS), ("--transform", TRANSFORMS),
                        ("--convention", CONVENTIONS)):
        assert f"{flag} {{{','.join(table)}}}" in rsa
    for table in (RDM_METHODS, TRANSFORMS):  # each method's options are flags
        for m in table.values():
            for f in dataclasses.fields(m.options) if m.options else ():
                assert f"--{f.name.replace('_', '-')}" in rsa
    assert f"--probe {{auto,{','.join(PROBES)}}}" in _help(capsys, "probe")
    assert ", ".join(statistic_names()) in _help(capsys, "stats")
    assert "cka, angular, procrustes" in _help(capsys, "align", "cka")


def test_options_of_another_method_are_refused(tmp_path):
    kw = dict(data=str(tmp_path), brain=["b.npy"])
    with pytest.raises(ConfigError, match="--runs is for --rdm crossnobis, not --rdm correlation"):
        RsaConfig(runs="run", **kw)
    with pytest.raises(ConfigError, match="--gt-low is for --transform geotopological or geotopological\\+geodesic"):
        RsaConfig(gt_low=0.1, **kw)
    with pytest.raises(ConfigError, match="--gt-low/--gt-up must satisfy"):
        RsaConfig(transform="geotopological", gt_low=0.9, gt_up=0.1, **kw)
    with pytest.raises(ConfigError, match="unknown RDM method 'nope'"):
        RsaConfig(rdm="nope", **kw)
    with pytest.raises(ConfigError, match="--kernel"):
        CkaConfig(data=str(tmp_path), kernel="poly")
    with pytest.raises(ConfigError, match="--k must be positive"):
        KnnConfig(data=str(tmp_path), k=0)
    assert RsaConfig(rdm="crossnobis", runs="run", **kw).rdm_options.runs == "run"


def test_a_metric_registered_from_outside_runs_streamed_and_in_memory(tmp_path, monkeypatch):
    """No metric is special-cased by the pair runner: a new streamed one (from the moments) and a new in-memory one
    (prepared per view) give what their plain functions give."""
    from analysis.align.pairs_run import run_pairs

    data = str(tmp_path / "ds")
    stimulus_dataset(data)
    import shards

    ds = shards.open_dataset(data)
    a, b = (ds.to_numpy(h).astype(np.float64) for h in ("a", "b"))
    cross = float(np.abs((a - a.mean(0)).T @ (b - b.mean(0))).sum())
    monkeypatch.setitem(METRICS, "abs_cross", AlignmentMetric(
        "abs_cross", lambda x, y: 0.0, "sum of |centred cross products|", "test",
        from_moments=lambda m, o: float(np.abs(m.xty).sum())))
    monkeypatch.setitem(METRICS, "first_rows", AlignmentMetric(
        "first_rows", lambda x, y: 0.0, "sum of the first rows", "test",
        prepare=lambda x, o: x[:3], compare=lambda p, q, o: float(p.sum() + q.sum())))
    got = run_pairs(CkaConfig(data=data, hooks=["a", "b"], metrics=["abs_cross", "cka"], out=str(tmp_path / "o")))
    score = {r["method"]: r["score"] for r in got.pairs}
    assert score["abs_cross"] == pytest.approx(cross, rel=1e-9) and "linear_cka" in score
    monkeypatch.setattr(KnnConfig, "metric_names", lambda self: ["first_rows"])
    got = run_pairs(KnnConfig(data=data, hooks=["a", "b"], out=str(tmp_path / "k")))
    assert got.pairs[0]["score"] == pytest.approx(a[:3].sum() + b[:3].sum(), rel=1e-6)


NEW_METRIC = '''
"""A whole alignment metric in one file: the correlation of the two views' first features, and its null."""
import numpy as np

from analysis.align.registry import AlignmentMetric, register_metric


def first_r(x, y):
    return float(np.corrcoef(x[:, 0], y[:, 0])[0, 1])


def null(x, y, perms, options):
    return first_r(x, y), np.array([first_r(x, y[p]) for p in perms])


register_metric(AlignmentMetric("first_r", first_r, "correlation of the first features", "test",
                                prepare=lambda x, o: x, compare=lambda a, b, o: first_r(a, b), null=null))
'''


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A folder on sys.path for metric modules written by a test; they and what they registered go afterwards."""
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(METRICS)
    yield folder
    for name in [n for n in sys.modules if n.startswith("tmp_metric_")]:
        del sys.modules[name]
    for name in set(METRICS) - before:
        del METRICS[name]


def test_a_metric_with_a_null_is_one_new_file(tmp_path, module_dir, capsys):
    """The file above, imported, is a choice of ``align cka --metrics`` (whose parser was defined before it) and
    runs through the command line with ``--permutations``: its own null gives the p-value."""
    (module_dir / "tmp_metric_first_r.py").write_text(NEW_METRIC)
    mod = importlib.import_module("tmp_metric_first_r")
    assert "first_r" in _help(capsys, "align", "cka")
    data = str(tmp_path / "ds")
    stimulus_dataset(data)
    argv = ["align", "cka", "--data", data, "--hooks", "a,b", "--metrics", "cka,first_r", "--permutations", "19",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    rows = [r for r in json.loads(capsys.readouterr().out.splitlines()[-1])["pairs"] if r["method"] == "first_r"]
    import shards

    ds = shards.open_dataset(data)
    a, b = (ds.to_numpy(h).astype(np.float64) for h in ("a", "b"))
    ab = next(r for r in rows if (r["hook"], r["hook2"]) == ("a", "b"))
    assert ab["score"] == pytest.approx(mod.first_r(a, b), rel=1e-6)
    assert ab["permutations"] == 19 and 1 / 20 <= ab["p_value"] <= 1 and ab["null_sd"] > 0


def test_a_file_registering_a_taken_name_fails_at_import(module_dir):
    """A new file that claims a name another file registered (the alignment metric ``cka``) fails when it is
    imported, naming both files; reloading a module (the same place again) is not a second registration."""
    clash = "from analysis.align.registry import AlignmentMetric, register_metric\n\n" \
            "register_metric(AlignmentMetric({name!r}, lambda x, y: 0.0, 'a metric', 'test'))\n"
    (module_dir / "tmp_metric_clash.py").write_text(clash.format(name="cka"))
    (module_dir / "tmp_metric_fresh.py").write_text(clash.format(name="fresh"))
    with pytest.raises(DuplicateNameError, match=r"alignment metric 'cka' is registered twice: at "
                                                 r"analysis/align/metrics/cka\.py:\d+ and at .*tmp_metric_clash\.py:3"):
        importlib.import_module("tmp_metric_clash")
    assert METRICS["cka"].describe != "a metric"
    importlib.reload(importlib.import_module("tmp_metric_fresh"))
    assert METRICS.where("fresh").endswith("tmp_metric_fresh.py:3")


def test_a_statistic_family_carries_its_order(monkeypatch, capsys):
    """No list of family names outside their files: each ``Statistic`` says where it runs and is listed."""
    assert statistic_names() == ["norms", "sparsity", "massive", "spectrum", "intrinsic", "clusters", "voids",
                                 "logit_lens"]
    monkeypatch.setitem(STATISTICS, "kurtosis", Statistic("kurtosis", "test", lambda ctx: None, order=35))
    assert statistic_names()[2:5] == ["massive", "kurtosis", "spectrum"]
    assert "massive, kurtosis, spectrum" in _help(capsys, "stats")

"""Choices and options come from the registries: every registered method is a CLI choice, its options are flags
of the commands that use it, a method's options given for another method are refused, and a metric registered
from outside runs through the same pair runner as CKA and k-NN."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.align.config import CkaConfig, KnnConfig, RsaConfig
from analysis.align.registry import COMPARISONS, CONVENTIONS, METRICS, RDM_METHODS, TRANSFORMS, AlignmentMetric
from analysis.geometry.registry import statistic_names
from analysis.probe.registry import PROBES
from cluster.cli import main
from shards.errors import ConfigError
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

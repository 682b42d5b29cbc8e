"""Command-line hardening, round three (issue 41): option checks that were tracebacks (finding 20: ``ls --threads
0``, ``ls --depth -1``, ``info ftp://…``) and outputs inside a dataset refused before anything is created
(finding 21: a refused ``--out DS/data/sub`` left an empty folder inside the dataset; some commands did not refuse
it at all). Real datasets on disk, the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import analysis.geometry.run as stats_run
import shards
from analysis.common.rundir import RunMismatchError
from analysis.geometry.config import StatsConfig
from analysis.sae.config import SaeTrainConfig
from analysis.sae.train import run as train_sae
from cluster.cli import main
from tests.helpers import write_dataset
from tests.webserver import free_port


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("flags", "option", "accepted"), [
    (["--threads", "0"], "--threads 0", "give 1 or more"),
    (["--threads", "-4"], "--threads -4", "give 1 or more"),
    (["--depth", "-1"], "--depth -1", "give 0"),
])
def test_ls_options_out_of_range_are_messages(tmp_path, capsys, flags, option, accepted):
    assert main(["ls", str(tmp_path), *flags]) == 2
    err = _error(capsys)
    assert f"actlake ls: error: {option}: {accepted}" in err and "(the default)" in err


def test_a_uri_whose_filesystem_cannot_open_is_a_message(capsys):
    port = free_port()  # nothing listens there: ftp's filesystem connects (and fails) when it is made
    for uri in (f"ftp://127.0.0.1:{port}/acts/x", "foo://bucket/x"):
        for argv in (["info", uri], ["ls", uri], ["verify", uri]):
            assert main(argv) == 2, argv
            err = _error(capsys)
            assert f"cannot open {uri!r}" in err and "s3://bucket/prefix" in err and "file://" in err, err


@pytest.fixture
def ds(tmp_path) -> Path:
    write_dataset(str(tmp_path / "ds"), units=2, rows=20)
    return tmp_path / "ds"


def _tree(root: Path) -> set[str]:
    """Every file and folder under ``root``: a refused command must add none."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_outputs_inside_a_dataset_are_refused_before_anything_is_created(ds, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "a cat"}) + "\n")
    before = _tree(ds)
    sub = f"{ds}/data/sub"
    commands = [
        ["stats", "--data", str(ds), "--out", sub],
        ["probe", "--data", str(ds), "--label", "label", "--out", sub],
        ["sae", "train", "--data", str(ds), "--hook", "resid.0", "--out", sub],
        ["align", "cka", "--data", str(ds), "--hooks", "resid.0", "--out", f"{ds}/_log/x"],
        ["export", str(ds), "--hook", "resid.0", "--out", sub],
        ["demo", "--out", sub, "--units", "1"],
        ["extract", "--model", "tests.model_factories:tiny_gpt2", "--data", str(corpus), "--out", f"{ds}/stats/x"],
        ["sae", "dashboard", "--sae", str(tmp_path / "sae"), "--data", str(ds), "--out", f"{ds}/_commits/site"],
        ["sae", "encode", "--sae", str(tmp_path / "sae"), "--data", str(ds), "--out", str(tmp_path / "enc"),
         "--dashboard", f"{ds}/data/site"],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = _error(capsys)
        assert "lies inside the dataset" in err and str(ds) in err, (argv, err)
        assert _tree(ds) == before, argv  # not even an empty folder
    assert not (tmp_path / "enc").exists()
    for argv in (["stats", "--data", str(ds), "--out", str(ds)], ["export", str(ds), "--out", str(ds)],
                 ["sae", "dashboard", "--sae", "x", "--data", str(ds), "--out", str(ds)]):
        assert main(argv) == 2, argv
        assert "is a dataset" in _error(capsys)
    assert _tree(ds) == before and shards.verify_dataset(str(ds)).ok


def test_an_analysis_called_from_python_creates_nothing_inside_a_dataset(ds):
    before = _tree(ds)
    with pytest.raises(RunMismatchError, match="lies inside the dataset"):
        stats_run.run(StatsConfig(data=str(ds), out=f"{ds}/data/sub", hooks=["resid.0"], sample=20, threads=1))
    with pytest.raises(RunMismatchError, match="lies inside the dataset"):
        train_sae(SaeTrainConfig(data=str(ds), hook="resid.0", out=f"{ds}/stats/sae"))
    assert _tree(ds) == before

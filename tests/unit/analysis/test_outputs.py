"""An analysis' output folder (issue 24, items 1 and 14): it never is, holds or lies inside a dataset, and
``--overwrite`` deletes only the files the earlier run wrote; another command's run is named as such. Each
failed before: ``stats --out DS`` was accepted and ``probe --out DS --overwrite`` then deleted the dataset, and a
user's ``thesis.tex`` beside a run was deleted by ``--overwrite``."""

from __future__ import annotations

import dataclasses

import pytest

import analysis.geometry.run as stats_run
import shards
from analysis.common.rundir import RunMismatchError
from analysis.geometry.config import StatsConfig
from analysis.probe.config import ProbeConfig
from analysis.probe.run import run as probe
from tests.unit.analysis.probe_data import planted_probe_dataset


def _stats(data, out, **kw):
    return StatsConfig(data=data, out=out, hooks=["resid.*"], label="label", sample=200, threads=1, **kw)


def _probe(data, out, **kw):
    return ProbeConfig(data=data, out=out, hooks=["resid.2"], label="label", threads=1, **kw)


@pytest.fixture
def data(tmp_path):
    planted_probe_dataset(str(tmp_path / "ds"), examples=60)
    return str(tmp_path / "ds")


def test_an_output_that_is_holds_or_lies_in_a_dataset_is_refused(tmp_path, data):
    before = shards.verify_dataset(data)
    with pytest.raises(RunMismatchError, match="is a dataset"):
        stats_run.run(_stats(data, data))
    with pytest.raises(RunMismatchError, match="is a dataset"):
        probe(_probe(data, data, overwrite=True))
    with pytest.raises(RunMismatchError, match="lies inside the dataset"):
        probe(_probe(data, f"{data}/runs/probe"))
    with pytest.raises(RunMismatchError, match="holds the dataset"):
        probe(_probe(data, str(tmp_path)))
    after = shards.verify_dataset(data)
    assert after.ok and before.ok and shards.open_dataset(data).num_rows == 360


def test_overwrite_deletes_only_what_the_earlier_run_wrote(tmp_path, data):
    folder = tmp_path / "myfolder"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("chapter 1")
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    stats_run.run(_stats(data, str(folder)))
    assert (folder / "stats.parquet").exists()
    (folder / "notes.txt").write_text("written after the run")  # neither preexisting nor the run's
    with pytest.raises(RunMismatchError, match="holds an `actlake stats` run; this is `actlake probe`"):
        probe(_probe(data, str(folder)))
    probe(_probe(data, str(folder), overwrite=True))
    assert (folder / "thesis.tex").read_text() == "chapter 1" and (folder / "sub" / "data.csv").exists()
    assert (folder / "notes.txt").exists()
    assert not (folder / "stats.parquet").exists() and not (folder / "hooks" / "resid.0.json").exists()
    assert (folder / "probe_results.parquet").exists()


def test_overwrite_of_a_killed_run_keeps_the_files_that_were_there_before(tmp_path, data, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "thesis.tex").write_text("chapter 1")

    def killed(task, hook):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(stats_run, "STATS", dataclasses.replace(stats_run.STATS, hook=killed))
        with pytest.raises(KeyboardInterrupt):
            stats_run.run(_stats(data, str(folder)))
    assert (folder / "run.json").exists()
    stats_run.run(_stats(data, str(folder), seed=1, overwrite=True))
    assert (folder / "thesis.tex").read_text() == "chapter 1" and (folder / "stats.parquet").exists()

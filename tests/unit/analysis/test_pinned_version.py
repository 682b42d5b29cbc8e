"""Analyses read exactly the version they record: a dataset appended to, re-extracted or shrunk after an
analysis planned gives the results of the same run on a frozen copy, and run.json names the version read
(in-process tasks here; Ray tasks in tests/integration/test_pinned_version_ray.py). ``--data URI@vN`` reads an
older version while newer ones exist, for every command that reads a dataset."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import analysis.align.encode_run as encode_run
import analysis.align.rsa_run as rsa_run
import analysis.geometry.run as stats_run
import analysis.probe.run as probe_run
import shards
from analysis.align.config import CkaConfig, EncodeConfig, KnnConfig, RsaConfig
from analysis.common.inputs import DatasetInput
from analysis.common.rundir import RunMismatchError
from analysis.geometry.config import StatsConfig
from analysis.probe.config import ProbeConfig
from shards.errors import ConfigError, DatasetNotFoundError
from tests.unit.analysis.geometry_data import planted_geometry_dataset
from tests.unit.analysis.pinning import (
    CHANGES,
    append,
    assert_same,
    brain_and_responses,
    change_after_planning,
    drop_and_append,
    frozen_copy,
    recorded_version,
    stimulus_dataset,
)
from tests.unit.analysis.probe_data import planted_probe_dataset


def _stats(data, out, **kw):
    return StatsConfig(data=data, out=out, hooks=["embed", "resid.*"], label="label", sample=300, threads=1, **kw)


def _probe(data, out, **kw):
    return ProbeConfig(data=data, out=out, hooks=["resid.*"], label="label", threads=1, **kw)


def _rsa(data, out, brain, **kw):
    return RsaConfig(data=data, out=out, hooks=["a", "b"], brain=[brain], noise_ceiling=True, threads=1, **kw)


def _encode(data, out, responses, **kw):
    return EncodeConfig(data=data, out=out, hooks=["a", "b"], responses=responses, folds=3, inner_folds=3,
                        alphas=[0.1, 1.0, 10.0], threads=1, **kw)


def _cases(tmp_path):
    """Per analysis: (module, its HookAnalysis, dataset maker, config maker)."""
    brain, responses = brain_and_responses(tmp_path)
    return {
        "stats": (stats_run, "STATS", lambda p: planted_geometry_dataset(p, examples=60), _stats),
        "probe": (probe_run, "PROBE", lambda p: planted_probe_dataset(p, examples=90), _probe),
        "rsa": (rsa_run, "RSA", stimulus_dataset, lambda d, o, **kw: _rsa(d, o, brain, **kw)),
        "encode": (encode_run, "ENCODE", stimulus_dataset, lambda d, o, **kw: _encode(d, o, responses, **kw)),
    }


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("name", ["stats", "probe", "rsa", "encode"])
def test_a_dataset_changed_after_planning_is_read_as_planned(tmp_path, monkeypatch, name, change):
    module, attr, make, config = _cases(tmp_path)[name]
    data = str(tmp_path / "ds")
    make(data)
    frozen = frozen_copy(data, tmp_path / "frozen")
    planned = shards.open_dataset(data).version
    expected = module.run(config(frozen, str(tmp_path / "expected")))
    seen = change_after_planning(monkeypatch, module, attr, CHANGES[change])
    got = module.run(config(data, str(tmp_path / "out")))
    assert seen == [planned] and shards.open_dataset(data).version > planned  # the dataset did change
    assert_same(expected.to_json(), got.to_json())
    assert recorded_version(str(tmp_path / "out")) == planned == got.to_json()["dataset"]["version"]


def test_a_killed_run_resumes_on_the_version_it_planned(tmp_path, monkeypatch):
    data, out = str(tmp_path / "ds"), str(tmp_path / "out")
    planted_geometry_dataset(data, examples=60)
    expected = stats_run.run(_stats(frozen_copy(data, tmp_path / "frozen"), str(tmp_path / "expected")))
    planned = shards.open_dataset(data).version
    real = stats_run.STATS.hook
    calls = []

    def dies_on_the_second_hook(task, hook):
        calls.append(hook)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(task, hook)

    monkeypatch.setattr(stats_run, "STATS", dataclasses.replace(stats_run.STATS, hook=dies_on_the_second_hook))
    with pytest.raises(KeyboardInterrupt):
        stats_run.run(_stats(data, out))
    append(data)  # a tick commits while the run is dead
    monkeypatch.undo()
    got = stats_run.run(_stats(data, out))
    assert_same(expected.to_json(), got.to_json())
    assert recorded_version(out) == planned == got.dataset.version < shards.open_dataset(data).version


def test_a_finished_run_of_an_older_version_is_named_with_the_version_to_ask_for(tmp_path):
    data, out = str(tmp_path / "ds"), str(tmp_path / "out")
    planted_geometry_dataset(data, examples=60)
    first = stats_run.run(_stats(data, out))
    append(data)
    with pytest.raises(RunMismatchError, match=rf"dataset_version.*--data {data}@v{first.dataset.version} reads"):
        stats_run.run(_stats(data, out))
    again = stats_run.run(_stats(f"{data}@v{first.dataset.version}", out))  # the finished run, as it was
    assert_same(first.to_json(), again.to_json())


def _versions(tmp_path, make) -> tuple[str, str, int]:
    """A dataset with a newer version on top of the one a frozen copy holds: (data, frozen, old version)."""
    data = str(tmp_path / "ds")
    make(data)
    frozen = frozen_copy(data, tmp_path / "frozen")
    old = shards.open_dataset(data).version
    append(data)
    assert shards.open_dataset(data).version > old
    return data, frozen, old


@pytest.mark.parametrize("name", ["stats", "probe", "rsa", "encode"])
def test_data_version_reads_an_older_version_per_hook_analyses(tmp_path, name):
    module, _attr, make, config = _cases(tmp_path)[name]
    data, frozen, old = _versions(tmp_path, make)
    expected = module.run(config(frozen, str(tmp_path / "expected")))
    got = module.run(config(f"{data}@v{old}", str(tmp_path / "out")))
    assert_same(expected.to_json(), got.to_json())
    assert recorded_version(str(tmp_path / "out")) == old


@pytest.mark.parametrize("command", ["cka", "knn"])
def test_data_version_reads_an_older_version_pair_analyses(tmp_path, command):
    from analysis.align.pairs_run import run_pairs

    data, frozen, old = _versions(tmp_path, stimulus_dataset)
    cls, kw = (CkaConfig, {"metrics": ["cka", "procrustes"]}) if command == "cka" else (KnnConfig, {"k": 4})
    expected = run_pairs(cls(data=frozen, hooks=["a", "b"], out=str(tmp_path / "expected"), **kw))
    got = run_pairs(cls(data=f"{data}@v{old}", hooks=["a", "b"], out=str(tmp_path / "out"), **kw))
    assert_same(expected.to_json(), got.to_json())
    assert got.dataset.version == old and recorded_version(str(tmp_path / "out")) == old


def test_data_version_reads_an_older_version_sae_train_and_encode(tmp_path):
    from safetensors.numpy import load_file

    from analysis.sae.config import SaeEncodeConfig, SaeTrainConfig
    from analysis.sae.encode import encode_dataset
    from analysis.sae.train import run as train

    data, frozen, old = _versions(tmp_path, lambda p: planted_probe_dataset(p, examples=120))
    kw = dict(hook=["resid.2"], k=[4], expansion=[2], tokens="2k", batch_size=128, eval_tokens="512", threads=1)
    torch.manual_seed(0)
    train(SaeTrainConfig(data=frozen, out=str(tmp_path / "sae-expected"), **kw))
    torch.manual_seed(0)
    train(SaeTrainConfig(data=f"{data}@v{old}", out=str(tmp_path / "sae"), **kw))
    a, b = (load_file(str(tmp_path / d / "sae_weights.safetensors")) for d in ("sae-expected", "sae"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["actlake"]["dataset"]["version"] == old
    assert recorded_version(str(tmp_path / "sae")) == old
    enc = encode_dataset(SaeEncodeConfig(sae=str(tmp_path / "sae"), data=f"{data}@v{old}",
                                         out=str(tmp_path / "latents")))
    latents = shards.open_dataset(str(tmp_path / "latents"))
    assert enc.rows == latents.num_rows == shards.open_dataset(data, version=old).num_rows
    assert latents.manifest.provenance.derived_from.version == old


def test_data_version_on_info(tmp_path, capsys):
    from cluster.cli import main

    data, _frozen, old = _versions(tmp_path, stimulus_dataset)
    assert main(["info", data, "--data-version", str(old), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == old and shown["num_rows"] == 30


def test_versions_are_whole_numbers_and_vacuumed_ones_say_so(tmp_path):
    from shards.versions import vacuum

    data = str(tmp_path / "ds")
    stimulus_dataset(data)
    old = shards.open_dataset(data).version
    drop_and_append(data)  # the dropped unit's file is named by the older versions only
    for bad in ("2", 2.5, True, -1):
        with pytest.raises(ConfigError, match="version"):
            shards.open_dataset(data, version=bad)
    with pytest.raises(ConfigError, match="version"):
        StatsConfig(data=DatasetInput(data, "2"))
    pinned = shards.open_dataset(data, version=old)
    vacuum(data, keep=1)
    with pytest.raises(DatasetNotFoundError, match=rf"version {old} was vacuumed \(kept: "):
        shards.open_dataset(data, version=old)
    with pytest.raises(DatasetNotFoundError, match=rf"version {old} was vacuumed"):
        pinned.to_numpy("a")  # a reader pinned to it while vacuum ran: its files are gone
    with pytest.raises(DatasetNotFoundError, match=rf"version {old} was vacuumed"):
        stats_run.run(StatsConfig(data=f"{data}@v{old}", out=str(tmp_path / "o"), hooks=["a"]))

"""Every dataset a command reads is pinned to one version when the run is planned and recorded (issue 37): the
reads of a second dataset (``--data2``, ``--bands-from``, crosscoder data in training and evaluation,
mean-ablation sources), growing while they run, read exactly the versions run.json names, and take ``URI@vN``;
an SAE trained on one version of a dataset later grown is read at that version by ``sae evaluate``,
``sae dashboard``, ``sae encode``, ``sae eval`` and splicing, and a new dataset at its URI is refused.
(``sae eval``'s model-running part on Ray: tests/integration/test_model_in_loop_ray.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import shards
from analysis.common.inputs import DatasetInput, split_pin
from analysis.common.runstart import InputMismatchError
from shards.errors import ConfigError
from shards.manifest import ModelInfo, Provenance
from tests.unit.analysis.pinning import append, assert_same, brain_and_responses, frozen_copy, stimulus_dataset

D = 8


def _run_json(out) -> dict:
    return json.loads((Path(out) / "run.json").read_text())


def _read(out, name: str) -> int:
    """The version of input ``name`` that ``out``'s run.json records."""
    return _run_json(out)["inputs"][name]["version"]


def token_dataset(path: str, examples: int = 48, tokens: int = 6, seed: int = 0, model: str = "tiny-a",
                  config: dict | None = None) -> None:
    """Token rows of hook ``h`` (example, position, token id) in 4 units; its manifest names ``model``."""
    rng = np.random.default_rng(seed)
    n = examples * tokens
    h = rng.standard_normal((n, D)).astype(np.float32) * rng.uniform(0.5, 2.0, D).astype(np.float32)
    ex = np.repeat(np.arange(examples), tokens).astype(np.int64)
    pos = np.tile(np.arange(tokens), examples).astype(np.int32)
    tok = rng.integers(0, 50, n).astype(np.int32)
    with shards.create_dataset(path, {"h": {"shape": [D], "dtype": "float32"}}, config=config,
                               provenance=Provenance(model=ModelInfo(name=model))) as w:
        for u, sel in enumerate(np.array_split(np.arange(n), 4)):
            w.write_unit(u, {"example_id": ex[sel], "position": pos[sel], "token_id": tok[sel], "h": h[sel]})


def grow(path: str, model: str | None = None) -> int:
    """Another writer commits a unit (and, with ``model``, records another model); the new latest version."""
    if model is None:
        append(path)
    else:
        ds = shards.open_dataset(path)
        with shards.create_dataset(path, {"h": {"shape": [D], "dtype": "float32"}}, mode="append",
                                   provenance=Provenance(model=ModelInfo(name=model))) as w:
            rows = ds.take(np.arange(6), hooks=["h"], columns=["example_id", "position", "token_id"])
            w.write_unit(max(u.id for u in ds.units) + 1, {
                "example_id": rows["example_id"].numpy() + 10_000, "position": rows["position"].numpy(),
                "token_id": rows["token_id"].numpy(), "h": rows["h"].numpy() * 40})
    return shards.open_dataset(path).version


def replace_with_another_dataset(path: str, versions: int) -> str:
    """What is at ``path`` deleted and another dataset written there (a new id), with ``versions`` versions."""
    shutil.rmtree(path)
    token_dataset(path, seed=7)
    for _ in range(versions - 1):
        append(path)
    return shards.open_dataset(path).dataset_id


# --- the pin syntax ---------------------------------------------------------------------------------------------
def test_the_pin_is_a_trailing_at_v_after_a_path_never_a_userinfo_or_a_host():
    assert split_pin("runs/ds@v3") == ("runs/ds", 3)
    assert split_pin("s3://KEY:SECRET@bucket/acts@v12") == ("s3://KEY:SECRET@bucket/acts", 12)
    assert split_pin("https://user:pass@host/ds") == ("https://user:pass@host/ds", None)
    assert split_pin("https://user:pass@v3") == ("https://user:pass@v3", None)  # a host named v3
    assert split_pin("runs/ds@v3/") == ("runs/ds@v3/", None)  # a folder named ds@v3
    assert split_pin("@v4") == ("", 4)  # version 4 of the command's default dataset
    got = DatasetInput("runs/ds@v3")
    assert (got.uri, got.version, str(got)) == ("runs/ds", 3, "runs/ds@v3")
    assert DatasetInput("runs/ds", 3) == "runs/ds@v3" and DatasetInput({"uri": "runs/ds", "version": 2}).version == 2
    with pytest.raises(ConfigError, match="version 3 and a version flag for 4"):
        DatasetInput("runs/ds@v3", 4)
    with pytest.raises(ConfigError, match="whole number"):
        DatasetInput("runs/ds", "2")


def test_credentials_leave_a_pinned_uri_for_the_storage_options():
    from analysis.geometry.config import StatsConfig

    cfg = StatsConfig(data="s3://AKIAX:se%2Fcret@bucket/acts@v5", hooks=["h"], out="runs/x")
    assert (cfg.data.uri, cfg.data.version) == ("s3://bucket/acts", 5)
    assert cfg.storage.credentials == {"key": "AKIAX", "secret": "se/cret"}


def test_the_cli_and_job_files_pin_with_the_older_version_flags_too(tmp_path, capsys):
    from cluster.cli import main

    data = str(tmp_path / "ds")
    token_dataset(data)
    old = shards.open_dataset(data).version
    grow(data)
    for args in (["--data", f"{data}@v{old}"], ["--data", data, "--data-version", str(old)]):
        out = str(tmp_path / f"s{len(args)}")
        assert main(["stats", *args, "--hooks", "h", "--stats", "norms", "--out", out]) == 0
        assert _read(out, "data") == old and _run_json(out)["dataset"]["version"] == old
    (tmp_path / "job.yaml").write_text(f"data: {data}\ndata_version: {old}\nhooks: [h]\nstats: [norms]\n"
                                       f"out: {tmp_path / 'job'}\n")
    assert main(["stats", "--config", str(tmp_path / "job.yaml")]) == 0
    assert _read(tmp_path / "job", "data") == old
    capsys.readouterr()
    assert main(["stats", "--data", f"{data}@v{old}", "--data-version", str(old + 1), "--hooks", "h",
                 "--out", str(tmp_path / "x")]) == 2
    assert f"asks for version {old} and a version flag for {old + 1}" in capsys.readouterr().err


# --- the second-dataset reads, growing while they run ------------------------------------------------------------
def test_data2_grown_after_planning_is_read_as_planned_and_pins(tmp_path, monkeypatch):
    import analysis.align.pairs_run as pairs_run
    from analysis.align.config import CkaConfig

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    stimulus_dataset(a)
    stimulus_dataset(b, seed=3)
    frozen = frozen_copy(b, tmp_path / "frozen")
    planned = shards.open_dataset(b).version
    kw = dict(hooks=["a"], hooks2=["b"], metrics=["cka", "procrustes"])
    expected = pairs_run.run_pairs(CkaConfig(data=a, data2=frozen, out=str(tmp_path / "expected"), **kw))
    real = pairs_run.plan_pairs

    def plan_then_grow(cfg, ds1, hooks, ds2):  # a tick commits to --data2 once the run has planned
        got = real(cfg, ds1, hooks, ds2)
        append(b)
        return got

    monkeypatch.setattr(pairs_run, "plan_pairs", plan_then_grow)
    got = pairs_run.run_pairs(CkaConfig(data=a, data2=b, out=str(tmp_path / "out"), **kw))
    assert shards.open_dataset(b).version > planned
    assert_same(expected.to_json(), got.to_json())
    assert _read(tmp_path / "out", "data2") == planned == got.inputs["data2"].version
    monkeypatch.undo()
    again = pairs_run.run_pairs(CkaConfig(data=a, data2=f"{b}@v{planned}", out=str(tmp_path / "pinned"), **kw))
    assert_same(expected.to_json(), again.to_json())
    assert _read(tmp_path / "pinned", "data2") == planned


def test_bands_from_grown_after_planning_is_read_as_planned_and_pins(tmp_path, monkeypatch):
    import analysis.align.banded_run as banded_run
    from analysis.align.config import BandedConfig

    data, other = str(tmp_path / "ds"), str(tmp_path / "other")
    stimulus_dataset(data)
    stimulus_dataset(other, seed=5)
    _brain, responses = brain_and_responses(tmp_path)
    frozen = frozen_copy(other, tmp_path / "frozen" / "other")  # the same name: the band is named after it
    planned = shards.open_dataset(other).version

    def cfg(band: str, out: str) -> BandedConfig:
        return BandedConfig(data=data, hooks=["a"], responses=responses, bands_from=[f"{band}#b"], folds=2,
                            inner_folds=2, steps=2, alphas=[1.0, 10.0], out=str(tmp_path / out), threads=1)

    expected = banded_run.run(cfg(frozen, "expected"))
    real, calls = banded_run.plan_stimuli, []

    def plan_then_grow(*args, **kwargs):  # --bands-from's dataset grows between planning and reading its rows
        calls.append(1)
        got = real(*args, **kwargs)
        if len(calls) == 2:
            append(other)
        return got

    monkeypatch.setattr(banded_run, "plan_stimuli", plan_then_grow)
    got = banded_run.run(cfg(other, "out"))
    assert shards.open_dataset(other).version > planned
    assert_same(expected.to_json(), got.to_json())
    assert _read(tmp_path / "out", "bands_from[0]") == planned == got.inputs["bands_from[0]"].version
    monkeypatch.undo()
    again = banded_run.run(cfg(f"{other}@v{planned}", "pinned"))
    assert_same(expected.to_json(), again.to_json())
    assert again.bands == got.bands  # the band keeps its name: the pin is not part of it


def _train(cfg_kw: dict, **kw):
    from analysis.sae.config import SaeTrainConfig
    from analysis.sae.train import run as train

    torch.manual_seed(0)
    return train(SaeTrainConfig(**{**dict(k=[2], expansion=[2], tokens="2k", batch_size=64, eval_tokens="256",
                                          threads=1), **cfg_kw, **kw}))


def test_a_crosscoder_resumes_on_the_versions_it_planned_after_its_second_dataset_grew(tmp_path, monkeypatch):
    import analysis.sae.runner as runner

    a, b, out = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "cc")
    token_dataset(a)
    token_dataset(b, seed=1)  # the same rows through "another model"
    planned = (shards.open_dataset(a).version, shards.open_dataset(b).version)
    kw = dict(data=a, crosscoder_data=b, hook=["h"], crosscoder=True, checkpoint_every=4, out=out)
    real = runner.save_checkpoint

    def dies_after_a_checkpoint(*args, **kwargs):  # killed once a checkpoint is safe; a tick grows the other
        real(*args, **kwargs)
        append(b)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(runner, "save_checkpoint", dies_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        _train(kw)
    monkeypatch.undo()
    assert shards.open_dataset(b).version > planned[1]
    _train(kw)  # the same command resumes (before: "already holds a different run")
    assert (_read(out, "data"), _read(out, "crosscoder_data")) == planned
    cfg = json.loads((Path(out) / "cfg.json").read_text())["actlake"]
    assert (cfg["dataset"]["version"], cfg["crosscoder_data"]["version"]) == planned
    assert cfg["crosscoder_data"]["dataset_id"] == shards.open_dataset(b).dataset_id


def test_evaluating_a_crosscoder_reads_both_datasets_at_the_versions_it_was_trained_on(tmp_path):
    from analysis.sae.evaluate import SaeEvaluateConfig
    from analysis.sae.evaluate import run as evaluate

    a, b, sae = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "cc")
    token_dataset(a)
    token_dataset(b, seed=1)
    trained = (shards.open_dataset(a).version, shards.open_dataset(b).version)
    _train(dict(data=a, crosscoder_data=b, hook=["h"], crosscoder=True, out=sae))
    expected = evaluate(SaeEvaluateConfig(sae=sae, suite=["core"], out=str(tmp_path / "expected")))
    grow(b)  # the second model's dataset grows: its rows no longer line up with the first's latest
    got = evaluate(SaeEvaluateConfig(sae=sae, suite=["core"], out=str(tmp_path / "ev")))
    assert_same(expected.metrics, got.metrics)
    assert (got.dataset.version, got.inputs["crosscoder_data"].version) == trained
    assert (_read(tmp_path / "ev", "data"), _read(tmp_path / "ev", "crosscoder_data")) == trained


def test_mean_ablation_reads_the_version_it_names_and_records_the_one_it_read(tmp_path):
    from analysis.interventions import build
    from ingest.config import ExtractConfig
    from ingest.driver import plan_extraction

    uri = str(tmp_path / "means")
    spec = {"resid.1": {"shape": [64], "dtype": "float32"}}
    rng = np.random.default_rng(0)
    with shards.create_dataset(uri, spec) as w:
        w.write_unit(0, {"example_id": np.arange(4), "resid.1": rng.standard_normal((4, 64)).astype(np.float32)})
    old = shards.open_dataset(uri)
    old_mean = torch.as_tensor(np.asarray(old.stats("resid.1").mean, dtype=np.float32))

    class GrowsAfterTheCheck:  # another writer commits between the check and the build (plan time)
        def check(self, spec, storage=None):
            build.check(spec, storage)
            with shards.create_dataset(uri, {"resid.1": {"shape": [64], "dtype": "float32"}}, mode="append") as w:
                w.write_unit(w_id(), {"example_id": np.arange(100, 104),
                                      "resid.1": 9 + rng.standard_normal((4, 64)).astype(np.float32)})

        def __call__(self, spec, ctx):
            return build(spec, ctx)

    def w_id() -> int:
        return max(u.id for u in shards.open_dataset(uri).units) + 1

    common = dict(model="tests.model_factories:tiny_gpt2", data="builtin:concepts?n=4", hooks=["resid.1"],
                  out=str(tmp_path / "o"))
    plan = plan_extraction(ExtractConfig(**common, intervene=[f"resid.1:mean:data={uri}@v{old.version}"]),
                           resolver=GrowsAfterTheCheck())
    torch.testing.assert_close(plan.in_loop.interventions[0].mean.reshape(-1), old_mean)
    read = plan.identity["interventions"][0]["sources"]["data"]
    assert (read["version"], read["dataset_id"]) == (old.version, old.dataset_id)
    assert plan.provenance.details["model_in_loop"]["interventions"][0]["sources"]["data"]["version"] == old.version
    latest = plan_extraction(ExtractConfig(**common, intervene=[f"resid.1:mean:data={uri}"]), resolver=build)
    now = shards.open_dataset(uri)
    assert latest.identity["interventions"][0]["sources"]["data"]["version"] == now.version > old.version
    torch.testing.assert_close(latest.in_loop.interventions[0].mean.reshape(-1),
                               torch.as_tensor(np.asarray(now.stats("resid.1").mean, dtype=np.float32)))


# --- an SAE trained on one version of a dataset later grown ------------------------------------------------------
@pytest.fixture
def grown_sae(tmp_path):
    """(dataset, SAE dir, the version it was trained on, the rows of that version): trained on version V, the
    dataset then grown twice by another writer, the second time recording another model."""
    data, sae = str(tmp_path / "ds"), str(tmp_path / "sae")
    token_dataset(data)
    append(data)
    trained = shards.open_dataset(data)
    _train(dict(data=data, hook=["h"], out=sae, eval_fraction=0.2))
    grow(data)
    assert grow(data, model="tiny-b") > trained.version
    return data, sae, trained.version, trained.num_rows


def test_sae_tools_read_the_version_the_sae_was_trained_on(grown_sae, tmp_path):
    from analysis.sae.config import SaeEncodeConfig
    from analysis.sae.dashboard.run import SaeDashboardConfig
    from analysis.sae.dashboard.run import run as dashboard
    from analysis.sae.encode import encode_dataset
    from analysis.sae.evaluate import SaeEvaluateConfig
    from analysis.sae.evaluate import run as evaluate

    data, sae, trained, rows = grown_sae
    ev = evaluate(SaeEvaluateConfig(sae=sae, suite=["core"], out=str(tmp_path / "ev")))
    assert ev.dataset.version == trained == _read(tmp_path / "ev", "data")
    assert ev.rows.startswith("heldout")  # the held-out split of that version is found again
    enc = encode_dataset(SaeEncodeConfig(sae=sae, out=str(tmp_path / "lat")))
    lat = shards.open_dataset(str(tmp_path / "lat"))
    assert enc.rows == lat.num_rows == rows and lat.manifest.provenance.derived_from.version == trained
    site = dashboard(SaeDashboardConfig(sae=sae, out=str(tmp_path / "site"), top=2, context=1))
    assert site.rows == rows and site.dataset.version == trained == _read(tmp_path / "site", "data")
    # told otherwise: the latest (URI alone) or another version (@vN alone: of the SAE's own dataset)
    latest = shards.open_dataset(data)
    enc = encode_dataset(SaeEncodeConfig(sae=sae, data=data, out=str(tmp_path / "lat2")))
    assert enc.rows == latest.num_rows > rows
    ev = evaluate(SaeEvaluateConfig(sae=sae, data=f"@v{trained + 1}", suite=["core"], rows="all",
                                    out=str(tmp_path / "ev2")))
    assert ev.dataset.version == trained + 1 and ev.dataset.uri == data


def test_a_splice_reads_the_sae_s_training_version_and_records_it(grown_sae, tmp_path):
    from analysis.interventions.sources import sae_source
    from analysis.sae.io import load_sae, recorded_model
    from ingest.hooks import HookPoint
    from ingest.interventions import ResolveContext

    _data, sae_dir, trained, _rows = grown_sae
    cfg = json.loads((Path(sae_dir) / "cfg.json").read_text())
    del cfg["actlake"]["model"]  # as SAEs saved before they recorded their model: the dataset's manifest tells
    (Path(sae_dir) / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(sae_dir)
    assert recorded_model(sae).name == "tiny-a"  # the version it was trained on; the latest records tiny-b
    ctx = ResolveContext(None, HookPoint("h", "h"), (D,))
    _sae, ident = sae_source(sae_dir, ctx)
    assert (ident["dataset"]["version"], ident["hook"]) == (trained, "h")


def test_a_new_dataset_at_the_sae_s_uri_is_refused_naming_both_ids(grown_sae, tmp_path):
    from analysis.sae.config import SaeEncodeConfig
    from analysis.sae.dashboard.run import SaeDashboardConfig
    from analysis.sae.dashboard.run import run as dashboard
    from analysis.sae.encode import encode_dataset
    from analysis.sae.evaluate import SaeEvaluateConfig
    from analysis.sae.evaluate import run as evaluate

    data, sae, trained, _rows = grown_sae
    old_id = shards.open_dataset(data).dataset_id
    for versions in (trained + 2, 1):  # the new dataset has that version too, or not
        new_id = replace_with_another_dataset(data, versions)
        why = rf"made from dataset {old_id} at {data}, which now holds another dataset \({new_id}\).*--data {data}"
        with pytest.raises(InputMismatchError, match=why):
            evaluate(SaeEvaluateConfig(sae=sae, suite=["core"], out=str(tmp_path / "ev")))
        with pytest.raises(InputMismatchError, match=why):
            encode_dataset(SaeEncodeConfig(sae=sae, out=str(tmp_path / "lat")))
        with pytest.raises(InputMismatchError, match=why):
            dashboard(SaeDashboardConfig(sae=sae, out=str(tmp_path / "site")))
        assert not any((tmp_path / d).exists() for d in ("ev", "lat", "site"))  # refused before any work
    # an explicit --data reads it anyway, and says what it read
    ev = evaluate(SaeEvaluateConfig(sae=sae, data=data, suite=["core"], rows="all", out=str(tmp_path / "ev")))
    assert ev.dataset.dataset_id == new_id


def test_sae_eval_starts_on_the_training_version_and_refuses_another_dataset(tmp_path):
    from analysis.sae.io import TrainedOn, load_sae, save_sae
    from analysis.sae.model_eval import SaeEvalConfig, eval_start, trained_examples
    from analysis.sae.registry import create_sae

    data = str(tmp_path / "ds")
    token_dataset(data, config={"model": "tests.model_factories:tiny_gpt2", "data": "builtin:concepts?n=48"})
    ds = shards.open_dataset(data)
    record = TrainedOn(data=DatasetInput(data, ds.version), dataset_id=ds.dataset_id, hook="h")
    save_sae(create_sae("topk", d_in=D, d_sae=16, k=2), str(tmp_path / "sae"), record.to_cfg())
    grow(data)
    sae = load_sae(str(tmp_path / "sae"))
    cfg = SaeEvalConfig(sae=str(tmp_path / "sae"), out=str(tmp_path / "eval"))
    with eval_start(cfg, sae) as (run, hook):
        assert (run.ds.version, hook, run.state) == (ds.version, "h", "new")
        assert trained_examples(run.ds) == 48  # heldout starts after the examples the SAE's version holds
        assert trained_examples(shards.open_dataset(data)) > 48
    shutil.rmtree(data)
    token_dataset(data, seed=3, config={"model": "tests.model_factories:tiny_gpt2", "data": "builtin:concepts"})
    with pytest.raises(InputMismatchError, match=f"made from dataset {ds.dataset_id}"):
        with eval_start(cfg, sae):
            pass

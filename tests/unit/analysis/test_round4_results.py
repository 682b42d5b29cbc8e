"""Attack on issue 41's fixes, the analyses: a probe whose best score is negative (F16), probe advice that named an
impossible --folds (F17), ``sae synth`` with fewer features than its structure (F13). Real datasets written by the
project's writer, the real command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import shards
from analysis.probe.summary import HookSummary, concept_depth
from cluster.cli import main


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _labelled(path: str, n: int, columns: dict, hooks=("resid.0", "resid.1")) -> str:
    rng = np.random.default_rng(0)
    types = {k: "string" if v.dtype == object else "float64" for k, v in columns.items()}
    with shards.create_dataset(path, {h: {"shape": [8], "dtype": "float32"} for h in hooks}, columns=types) as w:
        w.write_unit(0, {"example_id": np.arange(n), **columns,
                         **{h: rng.standard_normal((n, 8)).astype(np.float32) for h in hooks}})
    return path


# --- F16: a regression label no hook predicts --------------------------------------------------------------------
def test_concept_depth_of_scores_below_zero_is_undefined_and_names_the_best_hook():
    hooks = {f"h.{i}": HookSummary.of(i, [m, m], None, 1.0) for i, m in enumerate([-0.4, -0.1, -0.3])}
    depth = concept_depth(hooks, 0.9)
    assert depth.hook is None and depth.layer_index is None
    assert depth.best_hook == "h.1" and depth.best_mean == pytest.approx(-0.1)
    zero = concept_depth({"h.0": HookSummary.of(0, [0.0, 0.0], None, 1.0)}, 0.9)
    assert zero.hook is None and zero.best_hook == "h.0"
    assert concept_depth({"h.0": HookSummary.of(0, [0.5, 0.5], None, 1.0)}, 0.9).hook == "h.0"


def test_probe_of_a_label_with_negative_r2_on_every_hook_writes_its_summary(tmp_path, capsys):
    noise = np.random.default_rng(1).standard_normal(60)  # independent of the activations: R² < 0 out of sample
    data = _labelled(str(tmp_path / "ds"), 60, {"score": noise})
    out = tmp_path / "p"
    rc = main(["probe", "--data", data, "--label", "score", "--task", "regress", "--reg", "0.001",
               "--out", str(out)])
    _error(capsys)
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert all(h["mean"] < 0 for h in summary["hooks"].values())
    depth = summary["concept_depth"]
    assert depth["hook"] is None and depth["best_hook"] in summary["hooks"] and depth["best_mean"] < 0


# --- F17: advice that --folds cannot follow ----------------------------------------------------------------------
def test_probe_of_a_label_of_single_item_classes_does_not_advise_one_fold(tmp_path, capsys):
    own = np.array([f"c{i}" for i in range(12)], dtype=object)  # every example its own class
    two = np.array(["a", "b"] * 6, dtype=object)
    data = _labelled(str(tmp_path / "ds"), 12, {"own": own, "two": two, "one": np.array(["x"] * 12, dtype=object)})
    assert main(["probe", "--data", data, "--label", "own", "--out", str(tmp_path / "p")]) == 2
    err = _error(capsys)
    assert "at most 1" not in err and "single item" in err and "more examples" in err
    assert main(["probe", "--data", data, "--label", "two", "--group-by", "one", "--out", str(tmp_path / "p")]) == 2
    err = _error(capsys)
    assert "Lower --folds" not in err and "at least 2 groups" in err and "--group-by" in err


# --- F13: sae synth with fewer features than its structured defaults ----------------------------------------------
def test_sae_synth_with_too_few_features_names_the_flags_and_the_smallest_count(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["sae", "synth", "--rows", "200", "--n-features", "8", "--d", "4", "--out", str(out)]) == 2
    err = _error(capsys)
    assert "--n-features 8" in err and "--n-features 112 or more" in err
    assert "--parents" in err and "--children" in err and "--correlated-pairs" in err
    assert not out.exists()
    for flags, named in ((["--children", "0"], "--children 0"), (["--correlation", "2"], "--correlation 2"),
                         (["--d", "0"], "--d 0"), (["--noise", "-1"], "--noise -1")):
        assert main(["sae", "synth", "--rows", "200", *flags, "--out", str(out)]) == 2, flags
        assert named in _error(capsys)
    assert main(["sae", "synth", "--rows", "200", "--n-features", "8", "--d", "4", "--parents", "0",
                 "--correlated-pairs", "0", "--out", str(out)]) == 0


# --- F20: interventions that change nothing, or blow the activations up -------------------------------------------
GPT2 = "tests.model_factories:tiny_gpt2"


def _plan(tmp_path, spec: str, **kw):
    from analysis.interventions import build
    from ingest.config import ExtractConfig
    from ingest.driver import plan_extraction

    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal(64).astype(np.float32))
    np.save(tmp_path / "huge.npy", np.full(64, 1e30, np.float32))
    cfg = ExtractConfig(model=GPT2, data="builtin:concepts?n=4", hooks=["resid.1"], out=str(tmp_path / "o"),
                        intervene=[spec.format(d=tmp_path / "d.npy", huge=tmp_path / "huge.npy")], **kw)
    return plan_extraction(cfg, resolver=build)


@pytest.mark.parametrize("spec", ["resid.1:add:direction={d},from_position=99999999999999999999",
                                  "resid.1:add:direction={d},from_position=16", "resid.1:zero:from_position=16",
                                  "resid.1:ablate:direction={d},from_position=40"])
def test_a_from_position_no_input_reaches_is_refused_before_work(tmp_path, spec):
    from ingest.interventions import InterventionError

    with pytest.raises(InterventionError, match=r"from_position=\d+ is past the last token position.*at most 16 "
                                                r"tokens.*Give from_position below 16"):
        _plan(tmp_path, spec, context_size=16)
    assert not (tmp_path / "o").exists()
    assert _plan(tmp_path, spec.replace("=16", "=15").replace("=40", "=3").replace("99999999999999999999", "2"),
                 context_size=16).in_loop.interventions


@pytest.mark.parametrize(("spec", "named"), [("resid.1:add:direction={d},normalize=true,scale=1e38", "Lower scale"),
                                             ("resid.1:add:direction={huge}", "up to 1e+30")])
def test_an_added_vector_that_overflows_the_model_is_refused_naming_the_scale(tmp_path, spec, named):
    from ingest.interventions import InterventionError

    with pytest.raises(InterventionError, match="overflow float32") as err:
        _plan(tmp_path, spec)
    assert named in str(err.value) and "--dtype" not in str(err.value)


def test_nonfinite_activations_of_an_intervened_job_blame_the_intervention_first(tmp_path):
    """A finite but large scale (1e6) still overflows float16 storage: the unit's refusal names the intervention
    before the dtype advice (it blamed only the dtype)."""
    from ingest.driver import _nonfinite_cause
    from shards.errors import NonFiniteError

    plan = _plan(tmp_path, "resid.1:add:direction={d},scale=1e6")
    cause = _nonfinite_cause(plan)
    assert "--intervene 'resid.1:add:" in cause and "lower the scale" in cause
    spec = {"h": {"shape": [4], "dtype": "float16"}}
    with shards.create_dataset(str(tmp_path / "ds"), spec) as w:
        uw = w.unit_writer()
        uw.nonfinite_cause = cause
        with pytest.raises(NonFiniteError) as err:
            uw.write(0, {"example_id": np.arange(2), "h": np.full((2, 4), np.inf, np.float16)})
    text = str(err.value)
    assert text.index("--intervene") < text.index("--dtype")


# --- F25: the advice names the flags of the command that refused -------------------------------------------------
def test_sae_train_on_nonfinite_hooks_names_its_own_hook_flags(tmp_path, capsys):
    x = np.ones((20, 4), np.float32)
    x[0, 0] = np.nan
    data = str(tmp_path / "nan")
    with shards.create_dataset(data, {"h": {"shape": [4], "dtype": "float32"}}, allow_nonfinite=True) as w:
        w.write_unit(0, {"example_id": np.arange(20), "h": x})
    assert main(["sae", "train", "--data", data, "--hook", "h", "--out", str(tmp_path / "sae")]) == 2
    err = _error(capsys)
    assert "NaN or infinite values in h" in err and "(--hook, --target-hook)" in err and "(--hooks)" not in err

"""Command-line hardening, round four (attack on issue 41's fixes): output piped to ``head`` (F10), demo's --out
over another dataset (F15), card --out into another dataset (F14), messages that name the wrong thing (F25).
Real datasets on disk, the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import shards
from cluster.cli import main
from tests.helpers import write_dataset

GPT2 = "tests.model_factories:tiny_gpt2"


@pytest.fixture
def ds(tmp_path):
    return write_dataset(str(tmp_path / "ds"), units=2, rows=10)


@pytest.mark.parametrize("argv", [["versions"], ["info"], ["info", "--json"]])
def test_output_to_a_closed_pipe_ends_quietly(ds, tmp_path, argv):
    """F10: ``actlake versions DS | head -1`` printed a BrokenPipeError traceback. The reader here closes its end
    before the command writes anything, so every run meets the closed pipe."""
    err = tmp_path / "err.txt"
    with err.open("w") as stderr:
        p = subprocess.Popen([sys.executable, "-m", "cluster.cli", *argv, ds.uri], stdout=subprocess.PIPE,
                             stderr=stderr)
        p.stdout.close()
        code = p.wait(timeout=120)
    assert code == 141, err.read_text()
    assert "Traceback" not in err.read_text() and "BrokenPipe" not in err.read_text()


# --- F19: every zoo entry's hooks and intervention files checked before the first model runs -----------------------
@pytest.mark.parametrize(("second", "named"), [
    ({"hooks": "nosuchhook.99"}, "unknown hook 'nosuchhook.99'"),
    ({"hooks": "resid.1", "intervene": "resid.1:add:direction=/nonexist.npy"}, "direction file /nonexist.npy does "
                                                                               "not exist"),
])
def test_a_bad_later_zoo_entry_is_refused_before_the_first_model_runs(tmp_path, capsys, second, named):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"sentence {i} about a cat"}) + "\n" for i in range(6)))
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(json.dumps({"models": [{"name": "a", "model": GPT2, "hooks": "resid.1"},
                                          {"name": "b", "model": GPT2, **second}]}))
    out = tmp_path / "out"
    assert main(["extract", "--zoo", str(zoo), "--data", str(corpus), "--out", str(out), "--workers", "1",
                 "--pool", "mean"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "model 'b'" in err and named in err and "No model has run" in err, err
    assert not out.exists()  # model a did not run


# --- F14: card --out into another dataset's folder ----------------------------------------------------------------
def test_card_refuses_another_datasets_readme_and_keeps_its_own(tmp_path, capsys):
    one = write_dataset(str(tmp_path / "ds1"), units=1, rows=5)
    write_dataset(str(tmp_path / "ds2"), units=1, rows=5, seed=3)
    theirs = tmp_path / "ds2" / "README.md"
    before = theirs.read_bytes()
    assert main(["card", one.uri, "--out", str(theirs)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "the card of another dataset" in err and "ds2" in err
    assert f"actlake card {tmp_path / 'ds2'}" in err
    assert theirs.read_bytes() == before
    for own in (tmp_path / "ds1" / "README.md", tmp_path / "ds2" / ".." / "ds1" / "README.md"):
        assert main(["card", one.uri, "--out", str(own)]) == 0, own  # its own card, in any spelling
    (tmp_path / "link").symlink_to(tmp_path / "ds1")
    assert main(["card", str(tmp_path / "link"), "--out", str(tmp_path / "ds1" / "README.md")]) == 0
    assert main(["card", one.uri, "--out", str(tmp_path / "card.md")]) == 0


# --- F15: demo --out over a dataset it did not write ----------------------------------------------------------------
DEMO = ["--units", "1", "--rows-per-unit", "16", "--dim", "4", "--layers", "1"]


def test_demo_replaces_only_an_earlier_demo_unless_overwrite(tmp_path, capsys):
    real = write_dataset(str(tmp_path / "real"), units=1, rows=5)
    assert main(["demo", "--out", real.uri, *DEMO]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--overwrite" in err and "did not write" in err
    assert shards.open_dataset(real.uri).dataset_id == real.dataset_id  # untouched
    demo = str(tmp_path / "demo")
    assert main(["demo", "--out", demo, *DEMO]) == 0
    first = shards.open_dataset(demo).dataset_id
    assert main(["demo", "--out", demo, *DEMO, "--seed", "1"]) == 0  # an earlier demo: replaced as before
    assert shards.open_dataset(demo).dataset_id != first
    assert main(["demo", "--out", real.uri, *DEMO, "--overwrite"]) == 0
    assert shards.open_dataset(real.uri).manifest.config["command"] == "demo"


# --- F23: verify's summary line escapes the path's control characters ----------------------------------------------
def test_verify_summary_escapes_control_characters_of_the_path(tmp_path, capsys):
    ds = write_dataset(str(tmp_path / "ds\x1b[2Jname"), units=1, rows=5)
    assert main(["verify", ds.uri]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "ds\\x1b[2Jname" in out and "OK" in out.splitlines()[-1]


# --- F25: messages that named the wrong thing ----------------------------------------------------------------------
def test_info_reads_uri_at_vn_and_names_a_bad_version_suffix(ds, tmp_path, capsys):
    assert main(["info", f"{ds.uri}@v{ds.version}"]) == 0
    assert f"version {ds.version}" in capsys.readouterr().out
    for suffix in ("@v-1", "@vx"):
        assert main(["info", ds.uri + suffix]) == 2
        err = capsys.readouterr().err
        assert f"'{suffix}' is not a version" in err and "URI@vN" in err and "no actlake dataset" not in err
    assert main(["info", ds.uri + "@v99999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert "no version 99999999999999999999" in err and "Traceback" not in err
    assert main(["info", f"{ds.uri}@v1", "--version", "2"]) == 2
    assert "name two versions" in capsys.readouterr().err
    for command in (["versions"], ["verify"], ["card", "--print"]):
        assert main([command[0], f"{ds.uri}@v1", *command[1:]]) == 2
        err = capsys.readouterr().err
        assert f"`actlake {command[0]}` takes a dataset, not one of its versions: give {ds.uri}" in err
    assert main(["info", ""]) == 2
    err = capsys.readouterr().err
    assert "URI is empty" in err and "no actlake dataset at /" not in err


def test_moments_of_nonfinite_values_merge_without_numpy_warnings():
    import warnings

    import numpy as np

    from shards.stats import HookStats

    x = np.ones((4, 3), np.float32)
    x[0, 0], x[1, 1] = np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # `actlake info` printed "RuntimeWarning: invalid value encountered in add"
        a = HookStats.from_storage(x, "float32")
        merged = a.merge(HookStats.from_storage(x[::-1].copy(), "float32"))
    assert merged.nonfinite == 4 and merged.count == 8

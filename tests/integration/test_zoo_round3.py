"""``extract --zoo`` hardening, round three (issue 41, finding 15): a zoo file that is not YAML is a message naming
the file and the problem; names that would collide with the zoo's own files are refused when the file is read; a
model that cannot be found is refused before any model runs, whichever entry it is; a damaged ``zoo.json`` is
rebuilt from the models' datasets instead of stopping the zoo for good. Real Ray, real (tiny) models, offline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import shards
from cluster.cli import main
from cluster.extract_command import cmd_extract
from cluster.zoo import ZooFailedError, _shared_cores, check_zoo, failure_text, load_zoo, zoo_parallel
from ingest.config import ExtractConfig
from shards.errors import ConfigError

pytestmark = pytest.mark.integration
GPT2, LLAMA = "tests.model_factories:tiny_gpt2", "tests.model_factories:tiny_llama"


def _corpus(tmp: Path) -> str:
    path = tmp / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"sentence number {i} about a cat and a dog"}) + "\n"
                            for i in range(12)))
    return str(path)


def _cfg(tmp: Path, zoo: Path, out: Path) -> ExtractConfig:
    return ExtractConfig(zoo=str(zoo), data=_corpus(tmp), out=str(out), workers=1, unit_size=6, context_size=16,
                         pool="none", hooks=["resid.1"], dtype="float32")


def _zoo(tmp: Path, models: list[dict]) -> Path:
    path = tmp / "zoo.yaml"
    path.write_text(json.dumps({"models": models}))  # JSON is YAML
    return path


def test_a_zoo_file_that_is_not_yaml_is_a_message_naming_it(tmp_path, capsys):
    out = tmp_path / "out"
    for text, where in (("models: [{name: a, model: m}", "line 1, column 29"), ("models:\n\t- a", "line 2"),
                        ("\x00\x01\x02 binary", "unacceptable character")):
        (tmp_path / "z.yaml").write_bytes(text.encode())
        with pytest.raises(ConfigError, match=rf"--zoo {tmp_path}/z.yaml: not a YAML zoo file.*{where}"):
            load_zoo(ExtractConfig(zoo=str(tmp_path / "z.yaml"), out=str(out)))
        assert main(["extract", "--zoo", str(tmp_path / "z.yaml"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "not a YAML zoo file" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["zoo.json", "ZOO.json", "zoo.json.tmp-1a2b", "manifest.json", "README.md"])
def test_names_that_collide_with_the_zoos_own_files_are_refused_when_the_file_is_read(tmp_path, name):
    zoo = _zoo(tmp_path, [{"name": "ok", "model": GPT2}, {"name": name, "model": GPT2}])
    with pytest.raises(ConfigError, match=rf"model '{name}': the name is reserved.*Rename the model"):
        load_zoo(ExtractConfig(zoo=str(zoo), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_other_invalid_names_are_refused(tmp_path):
    for models, match in (([{"name": "a" * 101, "model": GPT2}], "needs a `name`"),
                          ([{"name": "Lite", "model": GPT2}, {"name": "lite", "model": GPT2}], "used twice"),
                          ([{"name": "a", "model": 5}], "`model` must be")):
        with pytest.raises(ConfigError, match=match):
            load_zoo(ExtractConfig(zoo=str(_zoo(tmp_path, models)), out=str(tmp_path / "out")))


def test_a_model_that_cannot_be_found_is_refused_before_any_model_runs(ray_local, tmp_path):
    out = tmp_path / "out"
    for bad, match in (("tests.model_factories:no_such_factory", "not importable.*no attribute"),
                       ("no_such_package.models:load", "not importable.*No module named"),
                       (str(tmp_path / "no-such-model-dir"), "not found")):
        zoo = _zoo(tmp_path, [{"name": "first", "model": GPT2}, {"name": "second", "model": bad}])
        with pytest.raises(ConfigError, match=rf"model 'second': .*{match}.*No model has run"):
            cmd_extract(_cfg(tmp_path, zoo, out))
        assert not out.exists()  # the first model did not run


def test_a_damaged_zoo_state_is_rebuilt_from_the_models_datasets(ray_local, tmp_path, caplog):
    out = tmp_path / "out"
    cfg = _cfg(tmp_path, _zoo(tmp_path, [{"name": "gpt2", "model": GPT2}, {"name": "llama", "model": LLAMA}]), out)
    first = cmd_extract(cfg)
    assert first.ran == ["gpt2", "llama"]
    before = {n: (shards.open_dataset(str(out / n)).version, shards.open_dataset(str(out / n)).num_rows)
              for n in first.ran}
    state = (out / "zoo.json").read_bytes()
    (out / "zoo.json").write_bytes(state[: len(state) // 2])  # cut short
    with caplog.at_level("WARNING", logger="actlake.extract"):
        rebuilt = cmd_extract(cfg)
    assert "zoo.json is damaged" in caplog.text and "rebuilding it" in caplog.text
    assert sorted(rebuilt.ran + rebuilt.skipped) == ["gpt2", "llama"]
    for name, (version, rows) in before.items():  # resumed from their datasets: nothing extracted twice
        ds = shards.open_dataset(str(out / name))
        assert (ds.version, ds.num_rows) == (version, rows) and shards.verify_dataset(str(out / name)).ok
    assert set(json.loads((out / "zoo.json").read_text())) == {"gpt2", "llama"}  # whole again
    again = cmd_extract(cfg)
    assert again.skipped == ["gpt2", "llama"] and again.ran == []
    (out / "zoo.json").write_text("[1, 2]")  # valid JSON, but not the zoo's record
    assert sorted(cmd_extract(cfg).ran) == ["gpt2", "llama"]


def test_a_failing_model_does_not_stop_the_others_and_is_recorded(ray_local, tmp_path, capsys):
    """Issue 39, item 3: the models run side by side; one whose actors fail (NaN activations, refused when its
    first unit is written, after planning passed) is recorded in zoo.json with its error while the others finish;
    the command exits 2 naming it, and a rerun with the entry fixed runs only that model."""
    out = tmp_path / "out"
    models = [{"name": "gpt2", "model": GPT2}, {"name": "broken", "model": "tests.model_factories:nan_gpt2"},
              {"name": "llama", "model": LLAMA}]
    cfg = dataclasses.replace(_cfg(tmp_path, _zoo(tmp_path, models), out), zoo_parallel=2)
    with pytest.raises(ZooFailedError, match=r"1 of 3 models failed: broken \(NonFiniteError") as failed:
        cmd_extract(cfg)
    summary = failed.value.summary
    assert summary.ran == ["gpt2", "llama"] and summary.parallel == 2 and list(summary.failed) == ["broken"]
    state = json.loads((out / "zoo.json").read_text())
    assert "NaN" in state["broken"]["failed"] and "summary" not in state["broken"]
    for name in ("gpt2", "llama"):  # finished despite the failure beside them, each row once
        ds = shards.open_dataset(str(out / name))
        assert ds.num_rows == state[name]["summary"]["rows"] > 0 and shards.verify_dataset(str(out / name)).ok
    capsys.readouterr()
    assert main(["extract", "--zoo", cfg.zoo, "--data", cfg.data, "--out", str(out), "--workers", "1",
                 "--unit-size", "6", "--context-size", "16", "--pool", "none", "--hooks", "resid.1",
                 "--dtype", "float32", "--zoo-parallel", "2"]) == 2
    assert "broken" in capsys.readouterr().err
    models[1]["allow_nonfinite"] = True  # fixed: the failed model runs, the finished ones are skipped
    again = cmd_extract(_cfg(tmp_path, _zoo(tmp_path, models), out))
    assert again.ran == ["broken"] and again.skipped == ["gpt2", "llama"] and not again.failed
    assert shards.open_dataset(str(out / "broken")).num_rows == state["gpt2"]["summary"]["rows"]


def test_models_share_the_cores_when_they_run_side_by_side(tmp_path):
    cfg = _cfg(tmp_path, _zoo(tmp_path, [{"name": f"m{i}", "model": GPT2} for i in range(3)]
                            + [{"name": "own", "model": GPT2, "threads_per_worker": 3}]), tmp_path / "o")
    models = load_zoo(cfg)
    assert zoo_parallel(cfg, models, cpus=2) == 1 and zoo_parallel(cfg, models, cpus=8) == 2
    assert zoo_parallel(cfg, models, cpus=64) == 4
    assert zoo_parallel(cfg, models[:1], cpus=64) == 1
    assert zoo_parallel(dataclasses.replace(cfg, zoo_parallel=1), models, cpus=64) == 1
    shared = _shared_cores(models, 2, cpus=8)
    assert [m.config.threads_per_worker for m in shared] == [4, 4, 4, 3]  # its own setting kept
    assert shared[0].fingerprint() == models[0].fingerprint()  # how it runs is not what it writes
    with pytest.raises(ConfigError, match="--zoo-parallel cannot be negative"):
        dataclasses.replace(cfg, zoo_parallel=-1)


def test_a_model_failing_while_checked_is_refused_naming_it_and_failures_read_as_one_line(tmp_path):
    cfg = _cfg(tmp_path, _zoo(tmp_path, [{"name": "gpt2", "model": GPT2}, {"name": "bad", "model": LLAMA}]),
               tmp_path / "o")

    def check(c):
        if c.model == LLAMA:
            raise RuntimeError("simulated failure in the probe batch\nTraceback (most recent call last): ...")

    with pytest.raises(ConfigError, match=r"model 'bad' failed while it was checked .*RuntimeError: simulated "
                                          r"failure in the probe batch\. No model has run"):
        check_zoo(cfg.zoo, load_zoo(cfg), check)

    class Wrapped(Exception):  # as Ray's RayTaskError: the actor's own error as .cause, colours in the text
        cause = ValueError("bad pixels in image_07")

    assert failure_text(Wrapped("\x1b[36mray::ExtractionActor.process()\x1b[39m (pid=1)\n  tb")) == (
        "ValueError: bad pixels in image_07")
    assert failure_text(RuntimeError("\x1b[31mred\x1b[0m\nmore")) == "RuntimeError: red"

"""Scheduled ticks attacked (issue 24, items 8, 9, 10 and 14), with real extraction on a local Ray. Each failed
before: a resumed tick mixed an input rewritten with the same size (half old, half new rows, `verify` OK); a growing
table with one edited row stopped growing under `--on-changed warn`; a planned input deleted before its tick
finished blocked the schedule for good (FileNotFoundError at every tick); a killed attempt vanished from the
history (its run number reused)."""

from __future__ import annotations

import json

import pytest

import ingest.driver
import shards
from cluster.cli import main
from cluster.schedules import ScheduleStore, run_tick_now
from ingest.config import ExtractConfig
from ingest.incremental import ChangedInputError, run_tick

pytestmark = pytest.mark.integration
JOB = dict(model="tests.model_factories:tiny_gpt2", hooks=["resid.1"], pool="mean", unit_size=5, batch_size=5,
           workers=1)


def _write(path, tag: str, n: int) -> None:
    path.write_text("".join(json.dumps({"text": f"{tag} line {i:03d} about a harbour"}) + "\n" for i in range(n)))


def _texts(ds) -> list[str]:
    return ds.metadata_table(["example_id"]).column(0).to_pylist()


def _die_after(monkeypatch, units: int) -> None:
    """The tick's process dies (KeyboardInterrupt) once ``units`` of its units are committed."""
    real = ingest.driver.extract_units

    def partial(plan, writer, todo, tick=""):
        real(plan, writer, todo[:units], tick)
        raise KeyboardInterrupt("killed mid-tick")

    monkeypatch.setattr(ingest.driver, "extract_units", partial)


def test_a_resumed_tick_refuses_an_input_rewritten_with_the_same_size(ray_local, tmp_path, monkeypatch):
    corpus, out = tmp_path / "corpus", tmp_path / "acts"
    corpus.mkdir()
    _write(corpus / "d1.jsonl", "old", 20)
    cfg = ExtractConfig(data=f"{corpus}/*.jsonl", out=str(out), **JOB)
    with monkeypatch.context() as m:
        _die_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            run_tick(cfg)
    _write(corpus / "d1.jsonl", "new", 20)  # the same size, other content
    with pytest.raises(ChangedInputError, match="changed while tick t000001 was unfinished.*--abandon-planned"):
        run_tick(cfg)
    result = run_tick(cfg, abandon_planned=True)
    assert result.status == "extracted" and result.tick == "t000002"
    ds = shards.open_dataset(str(out))
    assert ds.num_rows == 20 and [t.status for t in ds.manifest.ticks] == ["abandoned", "done"]
    assert all(u.tick == "t000002" for u in ds.units) and shards.verify_dataset(str(out)).ok
    first = json.loads((corpus / "d1.jsonl").read_text().splitlines()[0])["text"]
    assert first.startswith("new")


def test_a_deleted_planned_input_has_a_way_out(ray_local, tmp_path, monkeypatch, capsys):
    corpus, out, state = tmp_path / "corpus", tmp_path / "acts", str(tmp_path / "state")
    corpus.mkdir()
    _write(corpus / "a.jsonl", "a", 10)
    _write(corpus / "b.jsonl", "b", 10)
    job = tmp_path / "job.yaml"
    job.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in {**JOB, "data": f"{corpus}/*.jsonl",
                                                                   "out": str(out)}.items()))
    assert main(["schedule", "add", "grow", "--config", str(job), "--every", "1h", "--state", state]) == 0
    store = ScheduleStore(state)
    with monkeypatch.context() as m:
        _die_after(m, 1)
        with pytest.raises(KeyboardInterrupt):
            run_tick_now(store, "grow", _t("2030-01-01T00:00:00Z"))
    (corpus / "b.jsonl").unlink()
    capsys.readouterr()
    assert main(["schedule", "run", "grow", "--state", state]) == 2
    err = capsys.readouterr().err
    assert "b.jsonl, an input of tick t000001, is gone" in err and "--abandon-planned" in err
    assert main(["schedule", "run", "grow", "--abandon-planned", "--state", state]) == 0
    ds = shards.open_dataset(str(out))
    assert ds.num_rows == 10 and shards.verify_dataset(str(out)).ok
    runs = [(h.run, h.status) for h in store.history("grow")]
    assert runs == [(1, "killed"), (2, "failed"), (3, "extracted")]  # the killed attempt keeps its number


def test_a_growing_table_with_an_edited_row_keeps_growing_under_warn(ray_local, tmp_path):
    table, out = tmp_path / "table.jsonl", tmp_path / "acts"
    _write(table, "row", 20)
    cfg = ExtractConfig(data=str(table), out=str(out), **JOB)
    assert run_tick(cfg).status == "extracted"
    lines = table.read_text().splitlines()
    lines[3] = json.dumps({"text": "an edited row"})
    table.write_text("\n".join(lines) + "\n" + "".join(
        json.dumps({"text": f"row line {i:03d} about a harbour"}) + "\n" for i in range(20, 30)))
    with pytest.raises(ChangedInputError, match="a schedule's is set when it is added: `actlake schedule remove"):
        run_tick(cfg, on_changed="fail")  # the hint names what a schedule accepts (not a flag of `schedule run`)
    second = run_tick(cfg)
    assert second.status == "extracted" and second.changed == [str(table)] and second.examples == 10
    with open(table, "a") as f:
        f.write("".join(json.dumps({"text": f"row line {i:03d} about a harbour"}) + "\n" for i in range(30, 40)))
    third = run_tick(cfg)
    assert third.status == "extracted" and third.changed == [] and third.examples == 10
    ds = shards.open_dataset(str(out))
    assert ds.num_rows == 40 and sorted(_texts(ds)) == list(range(40))


def _t(s: str):
    from cluster.schedules import parse_time

    return parse_time(s)

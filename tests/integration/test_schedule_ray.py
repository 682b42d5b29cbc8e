"""Scheduled extraction for real: a corpus on S3 growing over four ticks (an actor killed in one, a file added
while another runs), a tick's driver killed mid-way and finished by the next, two ticks at once, readers pinned to
versions (`actlake cluster up` is tested with the submitted jobs in test_cluster_submit.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import s3fs

import shards
from cluster.cli import main
from cluster.schedules import Schedule, ScheduleStore, run_tick_now
from tests.integration.actor_kill import kill_an_actor_after
from tests.ray_tmp import ray_tmpdir_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
JOB = "model: tests.model_factories:slow_tiny_gpt2\nhooks: resid.1\npool: mean\nunit_size: 5\nbatch_size: 5\n"


def _lines(fs_open, path: str, file_no: int, n: int) -> None:
    with fs_open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"file {file_no} line {i} about a quiet harbour town", "file": file_no}) + "\n")


def _example_ids(ds) -> list[int]:
    return sorted(ds.metadata_table(["example_id"]).column(0).to_pylist())


def test_growing_corpus_on_s3_four_ticks_exactly_once(ray_local, s3_bucket, s3_endpoint):
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    crawl, out, state = f"{s3_bucket}/crawl", f"{s3_bucket}/acts/crawl", f"{s3_bucket}/schedules"
    for i in (0, 1):
        _lines(fs.open, f"{crawl}/part-{i}.jsonl", i, 20)
    store = ScheduleStore(state)
    store.add(Schedule("crawl", JOB + f"data: {crawl}/*.jsonl\nout: {out}\nworkers: 2\nthreads_per_worker: 1\n",
                       "2026-11-23T00:00:00Z", every_s=6 * 3600))
    # tick 1, with one extraction actor killed once two units are committed
    with kill_an_actor_after(shards.storage.Storage(out), commits=2) as killed:
        h1 = run_tick_now(store, "crawl", _t("2026-11-23T00:00:00Z"))
    assert killed and h1.status == "extracted" and h1.new_inputs == 2
    reader = shards.open_dataset(out)
    v1, rows_v1 = reader.version, reader.to_numpy("resid.1").tobytes()
    # tick 2: one new file before it, one more added while it runs (after its plan is committed)
    _lines(fs.open, f"{crawl}/part-2.jsonl", 2, 10)

    def add_while_running() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            m = shards.open_dataset(out).manifest
            if any(t.tick == "t000002" and t.status == "planned" for t in m.ticks):
                _lines(fs.open, f"{crawl}/part-3.jsonl", 3, 15)
                return
            time.sleep(0.05)

    adder = threading.Thread(target=add_while_running)
    adder.start()
    h2 = run_tick_now(store, "crawl", _t("2026-11-23T06:00:00Z"))
    adder.join()
    assert h2.status == "extracted" and h2.new_inputs == 1 and fs.exists(f"{crawl}/part-3.jsonl")
    assert reader.to_numpy("resid.1").tobytes() == rows_v1  # the reader opened before tick 2: the same bytes
    h3 = run_tick_now(store, "crawl", _t("2026-11-23T12:00:00Z"))  # the file added during tick 2
    assert h3.status == "extracted" and h3.new_inputs == 1
    before = shards.open_dataset(out).version
    h4 = run_tick_now(store, "crawl", _t("2026-11-23T18:00:00Z"))
    assert h4.status == "nothing new" and shards.open_dataset(out).version == before  # wrote nothing
    ds = shards.open_dataset(out)
    assert _example_ids(ds) == list(range(65))  # every example exactly once, ids unique across ticks
    files = [i.path.rsplit("/", 1)[1] for t in ds.manifest.ticks for i in t.inputs]
    assert files == ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl", "part-3.jsonl"]
    by_tick = {t.tick: set(range(*t.units)) for t in ds.manifest.ticks}
    assert all(u.id in by_tick[u.tick] for u in ds.units)  # each unit names its tick
    assert shards.open_dataset(out, version=v1).to_numpy("resid.1").tobytes() == rows_v1
    assert shards.verify_dataset(out).ok
    assert [(h.status, h.new_inputs) for h in store.history("crawl")] == [
        ("extracted", 2), ("extracted", 1), ("extracted", 1), ("nothing new", 0)]


def _t(s: str):
    from cluster.schedules import parse_time

    return parse_time(s)


def test_killed_tick_is_finished_by_the_next_and_a_concurrent_tick_stands_aside(ray_local, tmp_path, capsys,
                                                                                 request):
    corpus, out, state = tmp_path / "corpus", tmp_path / "acts", str(tmp_path / "state")
    corpus.mkdir()
    for i in (0, 1):
        _lines(open, str(corpus / f"part-{i}.jsonl"), i, 40)
    job = tmp_path / "job.yaml"
    job.write_text(JOB + f"data: {corpus}/*.jsonl\nout: {out}\nworkers: 1\nunit_size: 4\n")
    assert main(["schedule", "add", "grow", "--config", str(job), "--every", "1h", "--state", state]) == 0
    ray_tmp = ray_tmpdir_for(request)  # short (Ray's socket paths), removed after the test, pass or fail
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": ray_tmp}
    log = open(tmp_path / "tick.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "schedule", "run", "grow", "--state", state],
                            cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if (out / "data").exists() and len(list((out / "data").glob("*.parquet"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "tick.log").read_text()[-3000:]
        capsys.readouterr()
        assert main(["schedule", "run", "grow", "--state", state]) == 0  # at the same moment: stands aside
        assert "another tick is running" in capsys.readouterr().out
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the tick's driver and the local Ray it started
        proc.wait()
    planned = shards.open_dataset(str(out)).manifest.ticks
    assert [(t.tick, t.status) for t in planned] == [("t000001", "planned")]
    _lines(open, str(corpus / "part-2.jsonl"), 2, 8)  # new while the killed tick was unfinished
    h = run_tick_now(ScheduleStore(state), "grow", _t("2030-01-01T00:00:00Z"))
    assert h.status == "resumed" and h.tick == "t000001"
    h = run_tick_now(ScheduleStore(state), "grow", _t("2030-01-01T01:00:00Z"))
    assert h.status == "extracted" and h.new_inputs == 1
    ds = shards.open_dataset(str(out))
    assert _example_ids(ds) == list(range(88)) and [t.status for t in ds.manifest.ticks] == ["done", "done"]
    assert shards.verify_dataset(str(out)).ok

"""Crash safety for real: a writer process SIGKILLed in the middle of a unit, then rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import shards
from tests.helpers import raw_bytes, unit_columns
from tests.integration.crash_writer import BIG

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNITS, ROWS = 8, 3000  # ~14 MB per unit: writing one takes long enough to be caught in the middle


def start_writer(uri: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.integration.crash_writer", uri, str(UNITS), str(ROWS)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def check_committed_only(uri: str) -> int:
    """Readers see exactly the committed units, each complete and correct."""
    ds = shards.open_dataset(uri)
    assert shards.verify_dataset(uri).ok
    ids = [i for b in ds.iter_batches("mlp.0", batch_size=1000) for i in b["example_id"].tolist()]
    committed = sorted(u.id for u in ds.units)
    assert sorted(ids) == [i for u in committed for i in range(u * ROWS, (u + 1) * ROWS)]
    return len(committed)


def check_complete(uri: str) -> None:
    ds = shards.open_dataset(uri)
    assert ds.num_rows == UNITS * ROWS and [u.id for u in ds.units] == list(range(UNITS))
    ids = np.concatenate([b["example_id"].numpy() for b in ds.iter_batches("mlp.0", batch_size=4096)])
    assert len(ids) == len(np.unique(ids)) == UNITS * ROWS  # every row exactly once
    for u in (0, UNITS // 2, UNITS - 1):
        got = ds.take(np.arange(u * ROWS, (u + 1) * ROWS), dtype=None)
        exp = unit_columns(u, ROWS, BIG)
        assert raw_bytes(got["resid.0"]) == raw_bytes(exp["resid.0"])
        assert raw_bytes(got["mlp.0"]) == raw_bytes(exp["mlp.0"])
    assert ds.stats("mlp.0").count == UNITS * ROWS
    assert shards.verify_dataset(uri).ok


def test_sigkill_mid_unit_local_then_rerun(tmp_path):
    uri = str(tmp_path / "ds")
    data = tmp_path / "ds" / "data"
    proc = start_writer(uri)
    # Wait until unit 3's file is being written (its temp file exists), then kill -9.
    deadline = time.time() + 120
    caught_mid_write = False
    while time.time() < deadline and proc.poll() is None:
        if data.exists() and any(p.name.startswith("unit-000003-") and ".parquet.tmp-" in p.name
                                 for p in data.iterdir()):
            caught_mid_write = True
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert caught_mid_write, "the writer finished before it could be killed mid-unit"
    assert check_committed_only(uri) == 3
    assert not shards.open_dataset(uri).units[-1].id == 3
    # the dead writer's lock is stale: repair takes it over and removes the half-written file
    report = shards.verify_dataset(uri, repair=True)
    assert report.ok and len(report.removed) == 1 and ".tmp-" in report.removed[0]
    assert check_committed_only(uri) == 3

    out = subprocess.run([sys.executable, "-m", "tests.integration.crash_writer", uri, str(UNITS), str(ROWS)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "done skipped=3" in out
    check_complete(uri)
    assert shards.verify_dataset(uri).garbage == []
    assert sorted(p.name[:11] for p in data.iterdir()) == [f"unit-{u:06d}" for u in range(UNITS)]  # one file each


@pytest.mark.parametrize("kill_in_unit", [1, 4])
def test_sigkill_mid_unit_s3_then_rerun(s3_bucket, kill_in_unit):
    uri = f"{s3_bucket}/crash"
    proc = start_writer(uri)
    while (line := proc.stdout.readline()) and line.strip() != f"writing {kill_in_unit}":
        pass  # units before kill_in_unit are committed, this one has just started
    time.sleep(0.05)  # inside the unit: encoding or uploading it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = check_committed_only(uri)
    assert before <= kill_in_unit
    out = subprocess.run([sys.executable, "-m", "tests.integration.crash_writer", uri, str(UNITS), str(ROWS)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    skipped = int(out.strip().rsplit("skipped=", 1)[1])
    assert skipped >= before
    check_complete(uri)

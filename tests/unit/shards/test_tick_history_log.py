"""A scheduled dataset's tick history in the log (issue 38): a version that plans or finishes a tick records the tick
records that changed, not the whole list. Before, each tick's two log entries repeated every earlier tick (714 kB at
the 1,000th: quadratic in the schedule's age); now they hold one record, and every kept version still reads the
ticks it had, through checkpoints, pinned reads, verify, vacuum and repair."""

from __future__ import annotations

import json

import shards
from shards.manifest import InputRecord, TickRecord, now_iso
from shards.versionlog import CHECKPOINT_MAX, TICKS_CHANGED, log_path, merge_ticks, ticks_delta
from shards.versions import vacuum
from tests.helpers import HOOKS, unit_columns, write_dataset


def _tick(t: int) -> TickRecord:
    rec = InputRecord(f"/data/part-{t:04d}.jsonl", 100 + t, f"etag-{t}", f"{t:016x}", (t, t + 1))
    return TickRecord(tick=f"t{t:06d}", schedule="hourly", status="planned", planned=now_iso(), inputs=(rec,),
                      units=(1000 + t, 1001 + t), examples=(t, t + 1))


def test_tick_entries_hold_what_changed_and_every_version_reads_its_ticks(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=3)
    expected: dict[int, list[tuple[str, str]]] = {}
    n = CHECKPOINT_MAX + 12  # across a checkpoint
    for t in range(1, n + 1):
        with shards.create_dataset(uri, HOOKS, mode="append") as w:
            w.plan_tick(_tick(t))
            expected[w.manifest.version] = [(x.tick, x.status) for x in w.manifest.ticks]
            w.write_unit(1000 + t, unit_columns(1000 + t, 2))
            w.finish_tick(f"t{t:06d}")
        expected[shards.open_dataset(uri).version] = [(f"t{i:06d}", "done") for i in range(1, t + 1)]
    latest = shards.open_dataset(uri)
    assert [(x.tick, x.status) for x in latest.manifest.ticks] == expected[latest.version]
    # the last tick's entries: its own record only (the plan, then the finish with its unit)
    plan, finish = (json.loads((tmp_path / "ds" / log_path(v)).read_text()) for v in sorted(expected)[-2:])
    for e in (plan, finish):
        assert "ticks" not in e.get("state", {}) and len(e["state"][TICKS_CHANGED]) == 1
    assert plan["state"][TICKS_CHANGED][0]["status"] == "planned"
    assert finish["state"][TICKS_CHANGED][0]["status"] == "done"
    # every kept version reads the ticks it had (chains, checkpoints, pinned reads)
    for v, ticks in expected.items():
        assert [(x.tick, x.status) for x in shards.open_dataset(uri, version=v).manifest.ticks] == ticks, v
    assert shards.verify_dataset(uri).ok
    vacuum(uri, keep=5)
    for v in [v for v in expected if v > latest.version - 5]:  # the kept ones, from their new checkpoint
        assert [(x.tick, x.status) for x in shards.open_dataset(uri, version=v).manifest.ticks] == expected[v]
    assert shards.verify_dataset(uri).ok


def test_a_deleted_root_is_rebuilt_with_its_ticks(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=3)
    for t in range(1, 4):
        with shards.create_dataset(uri, HOOKS, mode="append") as w:
            w.plan_tick(_tick(t))
            w.finish_tick(f"t{t:06d}")
    (tmp_path / "ds" / "manifest.json").unlink()
    assert shards.verify_dataset(uri, repair=True).repaired
    assert [(x.tick, x.status) for x in shards.open_dataset(uri).manifest.ticks] == [
        (f"t{t:06d}", "done") for t in range(1, 4)]


def test_delta_and_merge():
    a = [{"tick": "t1", "status": "done"}, {"tick": "t2", "status": "planned"}]
    b = [{"tick": "t1", "status": "done"}, {"tick": "t2", "status": "done"}, {"tick": "t3", "status": "planned"}]
    assert ticks_delta(a, b) == b[1:] and merge_ticks(a, b[1:]) == b
    assert ticks_delta(None, b) is None and ticks_delta(b, a) is None  # the first, or a shorter list: written whole
    assert ticks_delta([{"tick": "t9"}], b) is None  # another history (an overwrite): written whole

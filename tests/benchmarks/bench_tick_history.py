"""What a scheduled dataset's tick history costs as it grows: the manifest records every tick (its inputs and the
ids they became), so that a tick knows what is new. Fabricated tick records (one input each, as an hourly schedule
over a growing folder records them; no extraction) on a 10-unit dataset:

    python tests/benchmarks/bench_tick_history.py --ticks 100 1000 3000 --out docs/results/tick-history-<date>.jsonl

Per size T: the root's bytes, the bytes of the last tick's two log entries (its plan and its finish), a commit of
one unit, the open and the planning a tick with nothing new does (``run_tick``'s read and ``plan_files``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

HOOKS = {"h": {"shape": [4], "dtype": "float16"}}


def unit(uid: int) -> dict:
    return {"example_id": np.array([uid], dtype=np.int64), "position": np.zeros(1, np.int32),
            "h": np.full((1, 4), uid % 7, np.float16)}


def grow_ticks(uri: str, have: int, upto: int) -> None:
    import shards
    from shards.manifest import InputRecord, TickRecord, now_iso

    with shards.create_dataset(uri, HOOKS, mode="append", commit_interval=1e9, fsync=False) as w:
        for t in range(have, upto):
            path = f"s3://bucket/crawl/part-{t:06d}.jsonl"
            rec = InputRecord(path, 1 << 20, f'"{t:032x}"', f"{t:016x}", (10 + t, 11 + t))
            w.plan_tick(TickRecord(tick=f"t{t + 1:06d}", schedule="hourly", status="planned", planned=now_iso(),
                                   inputs=(rec,), units=(10, 10), examples=(10 + t, 11 + t)))
            w.finish_tick(f"t{t + 1:06d}")
            w.flush()


def measure(uri: str, t: int) -> dict:
    import shards
    from ingest.incremental import covered_inputs
    from shards.manifest import read_manifest
    from shards.storage import Storage
    from shards.versionlog import list_log_versions

    st = Storage(uri)
    logged = list_log_versions(st)
    last_two = sum(st.size(f"_log/v{v:09d}.json") for v in logged[-2:])
    times = []
    with shards.create_dataset(uri, HOOKS, mode="append", commit_interval=1e9) as w:
        for i in range(8):
            t0 = time.perf_counter()
            w.write_unit(10_000_000 + t * 10 + i, unit(10_000_000 + t * 10 + i))
            w.flush()
            times.append(time.perf_counter() - t0)

    def plan() -> None:
        m = read_manifest(st, lazy=True)
        covered_inputs(m.ticks)

    reads = []
    for _ in range(5):
        t0 = time.perf_counter()
        plan()
        reads.append(time.perf_counter() - t0)
    return {"ticks": t, "root_bytes": st.size("manifest.json"), "last_tick_log_bytes": last_two,
            "commit_s": statistics.median(times), "open_and_plan_s": statistics.median(reads)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, nargs="*", default=[100, 1000, 3000])
    ap.add_argument("--dir", default="/tmp/bench-tick-history")
    ap.add_argument("--out", default=None)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    import shutil

    import shards

    shutil.rmtree(a.dir, ignore_errors=True)
    uri = f"{a.dir}/ds"
    with shards.create_dataset(uri, HOOKS) as w:
        for u in range(10):
            w.write_unit(u, unit(u))
    rows, have = [], 0
    for t in a.ticks:
        grow_ticks(uri, have, t)
        have = t
        rows.append(measure(uri, t))
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) > 1:
        (a0, a1) = rows[0], rows[-1]
        fits = {k: round(float(np.log(a1[k] / a0[k]) / np.log(a1["ticks"] / a0["ticks"])), 3)
                for k in ("root_bytes", "last_tick_log_bytes", "commit_s", "open_and_plan_s")}
        rows.append({"fitted_exponents": fits})
        print(json.dumps(rows[-1]))
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps({"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
                                    "label": a.label, **r}) + "\n")


if __name__ == "__main__":
    main()

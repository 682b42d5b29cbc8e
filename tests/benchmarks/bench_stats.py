"""Layer statistics over a large dataset: actlake stats against the reader's own throughput on the same data.

    python tests/benchmarks/bench_stats.py [--rows 2000000] [--hooks 7] [--dim 384] [--json out.jsonl]

Data: a synthetic token-level dataset (float16, ``--hooks`` hooks ``embed, resid.0..`` x ``--rows`` rows x
``--dim``; anisotropic rows with a decaying spectrum, a few massive entries, a 5-class label column), written
once under bench-data/ and reused. Measured in this process, one after the other, page cache warm:

- reader: every hook streamed once in row order (``iter_batches``, stored dtype, 8192 rows): rows/s.
- stats, streamed families (norms with layer change, sparsity, massive, spectrum, voids): one pass per hook.
- stats, every family with ``--label``: the streamed ones plus TwoNN, silhouette, Davies–Bouldin and Dunn on
  the 10,000-row sample.
- each streamed family alone on one hook: where the time goes.

Ratios are rows/s of a stats run over rows/s of the reader (hook-rows: rows x hooks). Peak memory: the largest
anonymous resident memory (RssAnon, sampled every 20 ms) above its value before the run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def anon_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


class PeakAnon:
    def __init__(self) -> None:
        self.peak, self.base, self._stop = 0.0, anon_mb(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_mb() - self.base)
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def make_dataset(path: Path, rows: int, hooks: int, dim: int, unit_rows: int = 262144) -> None:
    import shards

    rng = np.random.default_rng(0)
    names = ["embed", *[f"resid.{i}" for i in range(hooks - 1)]]
    scale = (1.0 / np.arange(1, dim + 1)) ** 0.5  # a decaying spectrum
    block = (rng.standard_normal((unit_rows, dim)) * scale).astype(np.float32)
    spec = {h: {"shape": [dim], "dtype": "float16"} for h in names}
    with shards.create_dataset(str(path), spec, columns={"label": "string"}) as w:
        for u, start in enumerate(range(0, rows, unit_rows)):
            n = min(unit_rows, rows - start)
            ex = (start + np.arange(n)) // 16
            cols = {"example_id": ex.astype(np.int64), "position": ((start + np.arange(n)) % 16).astype(np.int32),
                    "token_id": rng.integers(0, 30000, n).astype(np.int32),
                    "label": np.array([f"c{e % 5}" for e in ex], dtype=object)}
            for i, h in enumerate(names):
                x = np.roll(block[:n], i + u, axis=0) * (1 + 0.2 * i)
                x[::4096, 5] = 300.0  # a massive dimension
                cols[h] = x.astype(np.float16)
            w.write_unit(u, cols)
            print(f"  unit {u}: {start + n:,} rows", flush=True)


def read_all(uri: str) -> float:
    import shards

    ds = shards.open_dataset(uri)
    t0 = time.perf_counter()
    n = 0
    for h in ds.hooks:
        for b in ds.iter_batches(h, batch_size=8192, shuffle=False, dtype=None, reuse_buffers=False):
            n += len(b[h])
    return n / (time.perf_counter() - t0)


def stats_run(uri: str, out: Path, hooks: list[str], **kw) -> dict:
    from analysis.geometry.config import StatsConfig
    from analysis.geometry.run import run

    shutil.rmtree(out, ignore_errors=True)
    with PeakAnon() as mem:
        t0 = time.perf_counter()
        run(StatsConfig(data=uri, hooks=hooks, out=str(out), **kw))
        secs = time.perf_counter() - t0
    return {"seconds": round(secs, 2), "peak_anon_mb": round(mem.peak, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--hooks", type=int, default=7)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--json", default=str(ROOT / "docs" / "results" / f"stats-{time.strftime('%Y-%m-%d')}.jsonl"))
    args = ap.parse_args()
    import torch

    data = ROOT / "bench-data" / f"stats-{args.rows}-{args.hooks}-{args.dim}"
    if not (data / "manifest.json").exists():
        print(f"writing {data}")
        make_dataset(data, args.rows, args.hooks, args.dim)
    import shards

    ds = shards.open_dataset(str(data))
    hooks, rows = ds.hooks, ds.num_rows
    read_all(str(data))  # warm the page cache
    reader = read_all(str(data))
    out = ROOT / "bench-data" / "stats-out"
    streamed = stats_run(str(data), out, hooks, stats=["norms", "sparsity", "massive", "spectrum", "voids"],
                         sample=1000)
    full = stats_run(str(data), out, hooks, label="label", sample=10000)
    families = {}
    for fam in ("norms", "sparsity", "massive", "spectrum"):
        r = stats_run(str(data), out, [hooks[1]], stats=[fam], sample=1000)
        families[fam] = round(rows / r["seconds"])
    result = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "rows": rows, "hooks": len(hooks),
              "dim": args.dim, "threads": torch.get_num_threads(), "reader_rows_per_s": round(reader),
              "streamed": {**streamed, "rows_per_s": round(rows * len(hooks) / streamed["seconds"]),
                           "ratio_to_reader": round(rows * len(hooks) / streamed["seconds"] / reader, 3)},
              "all_with_label": {**full, "rows_per_s": round(rows * len(hooks) / full["seconds"]),
                                 "ratio_to_reader": round(rows * len(hooks) / full["seconds"] / reader, 3)},
              "one_family_one_hook_rows_per_s": families}
    print(json.dumps(result, indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

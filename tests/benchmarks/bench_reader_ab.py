"""The reader in two checkouts (e.g. before and after a change), alternated: what a reader change costs.

    git worktree add /tmp/before e62e948
    python tests/benchmarks/bench_reader_ab.py /tmp/before . --dims 768 4096 --gb 1.1 --repeats 3

Each checkout writes its own dataset once (its own writer: e.g. with or without page checksums), then
the checkouts alternate (A B A B ...) reading it in fresh processes, so drift and the page cache treat
both alike. A read is ``bench_reader.py``'s: shuffled batches of 4096 rows of one float16 hook with
``example_id``, one consumer thread, ``--prefetch`` background threads; GB/s of stored tensor bytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

WRITE = r'''
import shutil, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import shards
d, gb, out = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rows = (128 << 20) // (2 * d)
units = int(np.ceil(gb * 1e9 / (rows * d * 2)))
rng = np.random.default_rng(d)
shutil.rmtree(out, ignore_errors=True)
with shards.create_dataset(out, {"h": {"shape": [d], "dtype": "float16"}}) as w:
    for i in range(units):
        u = rng.standard_normal((rows, d), dtype=np.float32).astype(np.float16)
        w.write_unit(i, {"example_id": np.arange(i * rows, (i + 1) * rows), "h": u})
'''
READ = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
import shards, torch
torch.set_num_threads(1)
uri, prefetch = sys.argv[2], int(sys.argv[3])
ds = shards.open_dataset(uri)
t = time.perf_counter()
for b in ds.iter_batches("h", batch_size=4096, shuffle=True, seed=0, columns=["example_id"], prefetch=prefetch):
    x = b["h"]
    del x, b
print(ds.num_rows * ds.hook_spec("h").row_bytes / (time.perf_counter() - t) / 1e9)
'''


def run(code: str, *args) -> str:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True,
                          text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="checkout A (the baseline)")
    p.add_argument("b", help="checkout B")
    p.add_argument("--dims", type=int, nargs="+", default=[768, 4096])
    p.add_argument("--gb", type=float, default=1.1)
    p.add_argument("--prefetch", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default="bench-data")
    p.add_argument("--json", default=None, help="append the JSON results to this file")
    args = p.parse_args()
    results = []
    for d in args.dims:
        uris = {k: f"{args.dir}/ab-{k}-{d}" for k in ("a", "b")}
        for k in ("a", "b"):
            run(WRITE, getattr(args, k), d, args.gb, uris[k])
        for prefetch in args.prefetch:
            rates: dict[str, list[float]] = {"a": [], "b": []}
            run(READ, args.a, uris["a"], prefetch)  # warm the page cache for both
            run(READ, args.b, uris["b"], prefetch)
            for _ in range(args.repeats):
                for k in ("a", "b"):
                    rates[k].append(float(run(READ, getattr(args, k), uris[k], prefetch)))
            a, b = statistics.median(rates["a"]), statistics.median(rates["b"])
            r = {"bench": "reader-ab", "d": d, "prefetch": prefetch, "a_gbps": round(a, 3), "b_gbps": round(b, 3),
                 "b_over_a": round(b / a, 3), "runs": rates, "date": time.strftime("%Y-%m-%d")}
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)


if __name__ == "__main__":
    main()

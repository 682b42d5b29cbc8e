"""The writer and the import of ``shards`` in two checkouts (e.g. before and after a change), alternated.

    git worktree add /tmp/before 7b0a2cd
    python tests/benchmarks/bench_writer_ab.py /tmp/before . --repeats 4

Each measurement runs in a fresh process with the checkout first on ``sys.path``. Writer: GB/s of writing
``--units`` units of 128 MiB float16 (d = ``--dim``, statistics and per-unit fsync on: the defaults), timed
after shards and torch are imported, so that where an import happens does not count as writing. Import:
seconds of ``import shards`` alone. The checkouts alternate (A B A B ...), so drift cancels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

WRITE = r'''
import shutil, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import shards, torch  # noqa: F401 - imported before the timer
d, units, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = (128 << 20) // (2 * d)
rng = np.random.default_rng(0)
data = [rng.standard_normal((rows, d), dtype=np.float32).astype(np.float16) for _ in range(units)]
shutil.rmtree(out, ignore_errors=True)
t = time.perf_counter()
with shards.create_dataset(out, {"h": {"shape": [d], "dtype": "float16"}}) as w:
    for i, u in enumerate(data):
        w.write_unit(i, {"example_id": np.arange(i * rows, (i + 1) * rows), "h": u})
print(sum(u.nbytes for u in data) / (time.perf_counter() - t) / 1e9)
'''
IMPORT = "import sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter(); import shards; " \
         "print(time.perf_counter() - t)"


def one(code: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs=2, help="two checkouts to compare (A, B)")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--units", type=int, default=4)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--dir", default="bench-data")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    res = {r: {"write_gbps": [], "import_s": []} for r in args.roots}
    for _ in range(args.repeats):
        for i, root in enumerate(args.roots):
            res[root]["write_gbps"].append(one(WRITE, root, str(args.dim), str(args.units), f"{args.dir}/ab-{i}"))
            res[root]["import_s"].append(one(IMPORT, root))
    rows = [{"bench": "writer-ab", "root": r, "d": args.dim, "units": args.units, **{k: [round(x, 3) for x in v]
             for k, v in m.items()}, **{f"median_{k}": round(statistics.median(v), 3) for k, v in m.items()},
             "date": time.strftime("%Y-%m-%d")} for r, m in res.items()]
    for r in rows:
        print(json.dumps(r))
    if args.json:
        with open(args.json, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()

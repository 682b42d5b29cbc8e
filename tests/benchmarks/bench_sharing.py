"""Sharing costs, each against a baseline in the same run, on moto's S3 server (its own process, on loopback):

1. ``actlake copy`` (every unit read, checked against its checksum, written, committed) vs a plain byte copy of
   the same files with s3fs (``cp``: S3 -> S3, server-side; ``get``: S3 -> disk; ``put``: disk -> S3), and a
   one-hook copy (re-encoded);
2. ``actlake ls`` (folders walked level by level, manifests read in parallel) vs the listing it replaced (a
   recursive ``find`` of the prefix, then one manifest after the other), at growing numbers of datasets, with the
   fitted exponent of time vs datasets.

    python tests/benchmarks/bench_sharing.py --copy-mb 256 --ls 25 100 400 --out docs/results/sharing.jsonl
    python tests/benchmarks/bench_sharing.py --copy-mb 0 --ls --copy-units 100 400 1600   # copy cost vs units
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RESULTS: list[dict] = []


def record(**kw) -> None:
    RESULTS.append(kw)
    print(json.dumps(kw), flush=True)


def moto_server():
    """moto's S3 server as its own process (its request handling then does not share this process's GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    return proc, endpoint


def make_source(uri: str, mb: int, unit_mb: int, d: int, opts: dict) -> None:
    import shards

    rows = (unit_mb << 20) // (2 * d * 2)
    rng = np.random.default_rng(0)
    hooks = {"resid.3": {"shape": [d], "dtype": "float16"}, "resid.6": {"shape": [d], "dtype": "float16"}}
    with shards.create_dataset(uri, hooks, storage_options=opts) as w:
        for u in range(max(1, mb // unit_mb)):
            w.write_unit(u, {"example_id": np.arange(u * rows, (u + 1) * rows) // 128,
                             "position": np.arange(rows) % 128,
                             **{h: rng.standard_normal((rows, d), dtype=np.float32).astype(np.float16)
                                for h in hooks}})


def timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def bench_copy(endpoint: str, mb: int, tmp: Path) -> None:
    import s3fs

    import shards
    from shards.copy import CopyPlan, copy_dataset

    opts = {"endpoint_url": endpoint}
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False)
    for b in ("src", "dst", "raw"):
        fs.mkdir(b)
    make_source("s3://src/ds", mb, 16, 1024, opts)
    src = shards.open_dataset("s3://src/ds", opts)
    files = [f"src/ds/{u.path}" for u in src.units]
    size = sum(u.bytes for u in src.units)

    def whole(m):
        return CopyPlan(version=m.version)

    def one_hook(m):
        return CopyPlan(version=m.version, hooks=("resid.3",))

    cases = [
        ("s3->s3", lambda n: copy_dataset("s3://src/ds", f"s3://dst/c{n}", whole, src_options=opts, dst_options=opts),
         lambda n: fs.copy(files, f"raw/c{n}/", recursive=False), "s3fs cp (server-side CopyObject)"),
        ("s3->disk", lambda n: copy_dataset("s3://src/ds", str(tmp / f"d{n}"), whole, src_options=opts),
         lambda n: fs.get(files, str(tmp / f"raw{n}") + "/"), "s3fs get"),
        ("disk->s3", lambda n: copy_dataset(str(tmp / "d0"), f"s3://dst/u{n}", whole, dst_options=opts),
         lambda n: fs.put([str(tmp / "d0" / u.path) for u in shards.open_dataset(str(tmp / "d0")).units],
                          f"raw/u{n}/"), "s3fs put"),
        ("s3->s3 one hook of two", lambda n: copy_dataset("s3://src/ds", f"s3://dst/h{n}", one_hook,
                                                          src_options=opts, dst_options=opts),
         lambda n: fs.copy(files, f"raw/h{n}/", recursive=False), "s3fs cp (all of every file)"),
    ]
    for name, ours, theirs, baseline in cases:
        t_ours = t_base = float("inf")
        for rep in range(3):  # alternating, three times; the best of each (this machine is noisy)
            t_ours = min(t_ours, timed(ours, rep))
            t_base = min(t_base, timed(theirs, rep))
        record(bench="copy", case=name, mb=round(size / 2**20, 1), units=len(files), actlake_s=round(t_ours, 2),
               baseline=baseline, baseline_s=round(t_base, 2), actlake_mb_s=round(size / 2**20 / t_ours, 1),
               baseline_mb_s=round(size / 2**20 / t_base, 1), actlake_over_baseline=round(t_ours / t_base, 2))


def bench_copy_units(endpoint: str, counts: list[int], tmp: Path) -> None:
    """Copy cost against the number of units (tiny units: per-unit requests, records and commits dominate)."""
    import s3fs

    import shards
    from shards.copy import CopyPlan, copy_dataset

    opts = {"endpoint_url": endpoint}
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False)
    fs.mkdir("many")
    hooks = {"h": {"shape": [16], "dtype": "float16"}}
    times = []
    for n in sorted(counts):
        uri = f"s3://many/n{n}"
        with shards.create_dataset(uri, hooks, storage_options=opts, commit_interval=10.0) as w:
            for u in range(n):
                w.write_unit(u, {"example_id": np.arange(8) + 8 * u, "h": np.ones((8, 16), np.float16) * u})
        files = [f"many/n{n}/{u.path}" for u in shards.open_dataset(uri, opts).units]
        ours = timed(copy_dataset, uri, str(tmp / f"many{n}"), lambda m: CopyPlan(version=m.version), src_options=opts)
        base = timed(fs.get, files, str(tmp / f"manyraw{n}") + "/")
        times.append((n, ours, base))
        record(bench="copy-units", units=n, actlake_s=round(ours, 2), baseline="s3fs get", baseline_s=round(base, 2),
               actlake_ms_per_unit=round(1000 * ours / n, 2), baseline_ms_per_unit=round(1000 * base / n, 2))
    if len(times) >= 2:
        x = np.log([t[0] for t in times])
        record(bench="copy-units-growth",
               actlake_exponent=round(float(np.polyfit(x, np.log([t[1] for t in times]), 1)[0]), 2),
               baseline_exponent=round(float(np.polyfit(x, np.log([t[2] for t in times]), 1)[0]), 2))


def old_ls(root) -> list:
    """What ``actlake ls`` did before: one recursive listing of everything below the prefix, then each manifest
    in turn."""
    from shards.reader import open_dataset

    out = []
    for rel in root.walk_dirs("", maxdepth=4):
        out.append(open_dataset(f"{root.uri}/{rel}", root.storage_options).num_rows)
    return out


def bench_ls(endpoint: str, counts: list[int]) -> None:
    import shards
    from shards.catalog import list_datasets
    from shards.storage import Storage

    opts = {"endpoint_url": endpoint}
    hooks = {"h": {"shape": [8], "dtype": "float16"}}
    made = 0
    Storage("s3://lsbench", opts).fs.mkdir("lsbench")

    def make(i: int) -> None:
        with shards.create_dataset(f"s3://lsbench/acts/team{i % 10}/run{i:05d}", hooks, storage_options=opts,
                                   provenance={"model": {"name": "m"}}) as w:
            for u in range(4):  # 4 units: 4 data files, 4 commit records, 4 versions' log and statistics files
                w.write_unit(u, {"example_id": np.arange(2) + 2 * u, "h": np.zeros((2, 8), np.float16)})

    times = []
    for n in sorted(counts):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make, range(made, n)))
        made = n
        root = Storage("s3://lsbench/acts", opts)
        t_new = min(timed(list_datasets, root) for _ in range(2))
        assert len(list_datasets(root)) == n
        t_old = min(timed(old_ls, root) for _ in range(2))
        objects = len(root.find(""))
        times.append((n, t_new, t_old))
        record(bench="ls", datasets=n, objects=objects, actlake_s=round(t_new, 3), before_s=round(t_old, 3),
               speedup=round(t_old / t_new, 1))
    if len(times) >= 2:
        x = np.log([t[0] for t in times])
        record(bench="ls-growth", new_exponent=round(float(np.polyfit(x, np.log([t[1] for t in times]), 1)[0]), 2),
               before_exponent=round(float(np.polyfit(x, np.log([t[2] for t in times]), 1)[0]), 2))


def plot(path: str) -> None:
    """Copy throughput next to its baselines, and ls time against the number of datasets (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    copies = [r for r in RESULTS if r["bench"] == "copy"]
    ls = [r for r in RESULTS if r["bench"] == "ls"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    if copies:
        y = np.arange(len(copies))
        axes[0].barh(y - 0.2, [r["actlake_mb_s"] for r in copies], 0.4, label="actlake copy (checked)")
        axes[0].barh(y + 0.2, [r["baseline_mb_s"] for r in copies], 0.4, label="s3fs byte copy")
        axes[0].set_yticks(y, [r["case"] for r in copies])
        axes[0].set_xlabel("MB/s (256 MiB, moto S3 on loopback)")
        axes[0].legend(fontsize=8)
    if ls:
        n = [r["datasets"] for r in ls]
        axes[1].loglog(n, [r["actlake_s"] for r in ls], "o-", label="actlake ls (level walk, parallel)")
        axes[1].loglog(n, [r["before_s"] for r in ls], "s--", label="recursive find, one by one")
        axes[1].set_xlabel("datasets under the prefix")
        axes[1].set_ylabel("seconds")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--copy-mb", type=int, default=256)
    p.add_argument("--ls", type=int, nargs="*", default=[25, 100, 400])
    p.add_argument("--copy-units", type=int, nargs="*", default=[], help="unit counts for the copy growth run")
    p.add_argument("--out", default="")
    p.add_argument("--plot", default="", help="PNG of the results")
    args = p.parse_args()
    proc, endpoint = moto_server()
    import os

    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION":
                       "us-east-1"})
    tmp = Path(tempfile.mkdtemp(prefix="bench-sharing-"))
    try:
        if args.copy_mb:
            bench_copy(endpoint, args.copy_mb, tmp)
        if args.copy_units:
            bench_copy_units(endpoint, args.copy_units, tmp)
        if args.ls:
            bench_ls(endpoint, args.ls)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.plot:
        plot(args.plot)
    if args.out:
        with open(args.out, "a") as f:
            for r in RESULTS:
                f.write(json.dumps({**r, "date": time.strftime("%Y-%m-%d")}) + "\n")


if __name__ == "__main__":
    main()

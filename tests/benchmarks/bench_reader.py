"""Reader and writer throughput against raw numpy baselines measured in the same run.

    python tests/benchmarks/bench_reader.py --dims 768 4096 --gb 1.1          # local disk
    python tests/benchmarks/bench_reader.py --dims 768 --gb 0.25 --s3 --no-ray --no-hf   # + loopback S3

Prints a JSON line per measurement and a markdown table; ``--plot PNG`` draws the throughputs.
All rates are GB/s (1e9 bytes) of *stored tensor bytes* of the hook read, float16.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import shards  # noqa: E402

RESULTS: list[dict] = []


def record(**kw) -> None:
    RESULTS.append(kw)
    print(json.dumps(kw), flush=True)


def make_units(d: int, gb: float, unit_mb: int, seed: int) -> list[np.ndarray]:
    rows = (unit_mb << 20) // (2 * d)
    n_units = int(np.ceil(gb * 1e9 / (rows * d * 2)))
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((rows, d), dtype=np.float32).astype(np.float16) for _ in range(n_units)]


def bench_write(units: list[np.ndarray], root: Path, d: int) -> tuple[str, Path]:
    nbytes = sum(u.nbytes for u in units)
    flat = root / f"flat-{d}.f16"
    t = time.perf_counter()
    with open(flat, "wb") as f:  # raw baseline: the same bytes, one sequential file, fsync'ed
        for u in units:
            f.write(u.data)
        f.flush()
        os.fsync(f.fileno())
    raw = nbytes / (time.perf_counter() - t) / 1e9
    uri = str(root / f"ds-{d}")
    for stats, fsync in ((False, True), (True, True), (True, False)):
        shutil.rmtree(uri, ignore_errors=True)
        t = time.perf_counter()
        start = 0
        with shards.create_dataset(uri, {"h": {"shape": [d], "dtype": "float16"}}, compute_stats=stats,
                                   fsync=fsync) as w:
            for i, u in enumerate(units):
                w.write_unit(i, {"example_id": np.arange(start, start + len(u)), "h": u})
                start += len(u)
        rate = nbytes / (time.perf_counter() - t) / 1e9
        record(bench="write", d=d, stats=stats, fsync_per_unit=fsync, gbps=round(rate, 3), raw_gbps=round(raw, 3),
               ratio=round(rate / raw, 3), gb=round(nbytes / 1e9, 3))
    ds = shards.open_dataset(uri)
    record(bench="size", d=d, stored_bytes=ds.manifest.num_bytes, raw_bytes=nbytes,
           overhead_pct=round(100 * (ds.manifest.num_bytes / nbytes - 1), 3))
    return uri, flat


def bench_read(uri: str, flat: Path, d: int, batch: int, prefetch: int, label: str = "",
               zero_copy: bool = True) -> list[np.ndarray]:
    ds = shards.open_dataset(uri)
    ds.zero_copy = zero_copy  # False: every tensor column decoded by pyarrow (no page-cache views)
    order: list[np.ndarray] = []
    t = time.perf_counter()
    for b in ds.iter_batches("h", batch_size=batch, shuffle=True, seed=0, columns=["example_id"], prefetch=prefetch):
        x = b["h"]
        order.append(b["example_id"].numpy().copy())
        del x, b
    secs = time.perf_counter() - t
    nbytes = ds.num_rows * d * 2
    record(bench="read-cold" if label else "read", reader="actlake" if zero_copy else "actlake (pyarrow decode)",
           d=d, prefetch=prefetch, gbps=round(nbytes / secs / 1e9, 3), note=label)
    return order


def bench_raw(flat: Path, d: int, order: list[np.ndarray]) -> float:
    """Raw baseline: one flat file, numpy gathers the same rows in the same batch order, cast to float32."""
    mm = np.memmap(flat, dtype=np.float16, mode="r").reshape(-1, d)
    for idx in order[: len(order) // 2]:  # warm-up, as for actlake
        np.take(mm, idx, axis=0)
    t = time.perf_counter()
    for idx in order:
        x = torch.from_numpy(np.take(mm, idx, axis=0)).float()
        del x
    secs = time.perf_counter() - t
    rate = mm.size * 2 / secs / 1e9
    record(bench="read", reader="raw-numpy", d=d, gbps=round(rate, 3))
    return rate


def bench_ray(uri: str, d: int, batch: int) -> None:
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = shards.open_dataset(uri)
        rd = ds.to_ray(hooks=["h"], columns=[])
        t = time.perf_counter()
        n = 0
        for b in rd.iter_torch_batches(batch_size=batch, local_shuffle_buffer_size=4 * batch,
                                       dtypes=torch.float32):
            n += len(b["h"])
        secs = time.perf_counter() - t
        record(bench="read", reader="ray.data iter_torch_batches (local shuffle 4 batches)", d=d,
               gbps=round(n * d * 2 / secs / 1e9, 3))
    finally:
        ray.shutdown()


def bench_hf(uri: str, d: int, batch: int) -> None:
    ds = shards.open_dataset(uri)
    t = time.perf_counter()
    hf = ds.to_hf(["h"], columns=[])
    conv = time.perf_counter() - t
    hf = hf.shuffle(seed=0).with_format("torch")
    t = time.perf_counter()
    n = 0
    for b in hf.iter(batch_size=batch):
        n += len(b["h"].float())
    secs = time.perf_counter() - t
    record(bench="read", reader="hf datasets shuffle().with_format('torch')", d=d,
           gbps=round(n * d * 2 / secs / 1e9, 3), conversion_s=round(conv, 2))


def bench_s3(units: list[np.ndarray], d: int, batch: int) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"})
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        opts = {"endpoint_url": endpoint}
        rates = {}
        for where, uri in (("local", str(Path(ARGS.dir) / f"s3cmp-{d}")), ("s3", "s3://bench/acts")):
            shutil.rmtree(uri, ignore_errors=True) if where == "local" else None
            start = 0
            t = time.perf_counter()
            with shards.create_dataset(uri, {"h": {"shape": [d], "dtype": "float16"}}, mode="overwrite",
                                       storage_options=opts if where == "s3" else None) as w:
                for i, u in enumerate(units):
                    w.write_unit(i, {"example_id": np.arange(start, start + len(u)), "h": u})
                    start += len(u)
            wsecs = time.perf_counter() - t
            # S3 is read by both clients, alternating (s3fs, pyarrow, s3fs, pyarrow): the first pass of each
            # pays its client's start; the second is reported as its rate
            readers = ("local",) if where == "local" else ("s3fs", "pyarrow", "s3fs", "pyarrow")
            for reader in readers:
                os.environ["ACTLAKE_S3_READER"] = reader
                ds = shards.open_dataset(uri, opts if where == "s3" else None)
                t = time.perf_counter()
                for b in ds.iter_batches("h", batch_size=batch, shuffle=True, seed=0, columns=[]):
                    del b
                secs = time.perf_counter() - t
                nbytes = ds.num_rows * d * 2
                first = reader not in rates
                rates[reader] = nbytes / secs / 1e9
                record(bench="s3", where=where, reader=reader, pass_="first" if first else "second", d=d,
                       gb=round(nbytes / 1e9, 3), read_gbps=round(rates[reader], 3),
                       write_gbps=round(nbytes / wsecs / 1e9, 3))
        os.environ.pop("ACTLAKE_S3_READER", None)
        record(bench="s3", d=d, s3_pyarrow_over_s3fs=round(rates["pyarrow"] / rates["s3fs"], 3),
               s3_pyarrow_over_local=round(rates["pyarrow"] / rates["local"], 3),
               s3_s3fs_over_local=round(rates["s3fs"] / rates["local"], 3))
    finally:
        server.stop()


def main() -> None:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[768, 4096])
    p.add_argument("--gb", type=float, default=1.1, help="GB of float16 tensor bytes per dataset")
    p.add_argument("--unit-mb", type=int, default=128, help="MiB of tensor bytes per work unit")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dir", default="bench-data")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--s3", action="store_true", help="also compare loopback S3 (moto) with local disk")
    p.add_argument("--s3-gb", type=float, default=0.25)
    p.add_argument("--plot", default=None, help="write a PNG bar chart of read throughputs here")
    p.add_argument("--json", default=None, help="append the JSON results to this file")
    ARGS = p.parse_args()
    torch.set_num_threads(1)  # "one core" for the consumer; prefetch adds one background thread
    root = Path(ARGS.dir)
    root.mkdir(parents=True, exist_ok=True)
    for d in ARGS.dims:
        units = make_units(d, ARGS.gb, ARGS.unit_mb, seed=d)
        uri, flat = bench_write(units, root, d)
        bench_read(uri, flat, d, ARGS.batch, prefetch=0, label="cold: first pass in the process")
        order = bench_read(uri, flat, d, ARGS.batch, prefetch=0)
        bench_read(uri, flat, d, ARGS.batch, prefetch=0, zero_copy=False)
        bench_read(uri, flat, d, ARGS.batch, prefetch=2)
        raw = bench_raw(flat, d, order)
        ours = [r for r in RESULTS if r["bench"] == "read" and r.get("reader") == "actlake" and r["d"] == d]
        for r in ours:
            record(bench="read-ratio", d=d, prefetch=r["prefetch"], actlake_over_raw=round(r["gbps"] / raw, 3))
        if not ARGS.no_ray:
            bench_ray(uri, d, ARGS.batch)
        if not ARGS.no_hf:
            bench_hf(uri, d, ARGS.batch)
        if ARGS.s3:
            bench_s3(make_units(d, ARGS.s3_gb, 64, seed=1), d, ARGS.batch)
        del units
        flat.unlink()
        shutil.rmtree(uri, ignore_errors=True)
    if ARGS.json:
        with open(ARGS.json, "a") as f:
            for r in RESULTS:
                f.write(json.dumps({**r, "date": time.strftime("%Y-%m-%d")}) + "\n")
    if ARGS.plot:
        plot(ARGS.plot)


def plot(path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reads = [r for r in RESULTS if r["bench"] == "read"]
    dims = sorted({r["d"] for r in reads})
    names = []
    for r in reads:
        name = r["reader"] + (f" (prefetch {r['prefetch']})" if r["reader"].startswith("actlake") else "")
        if name not in names:
            names.append(name)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = []
        for d in dims:
            match = [r["gbps"] for r in reads if r["d"] == d and
                     (r["reader"] + (f" (prefetch {r['prefetch']})" if r["reader"].startswith("actlake") else ""))
                     == name]
            vals.append(match[0] if match else 0)
        ax.bar(np.arange(len(dims)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(dims)) + width * (len(names) - 1) / 2, [f"d = {d}" for d in dims])
    ax.set_ylabel("GB/s of stored float16 bytes → float32 torch")
    ax.set_title("Shuffled batches of 4096 rows, one hook, 2-core machine, warm page cache")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

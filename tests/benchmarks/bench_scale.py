"""The format's metadata costs as a dataset grows: tiny units (2 rows of 4 float16 values each), so that only the
manifest, the version records and their checks show.

    python tests/benchmarks/bench_scale.py --sizes 1000 5000 20000 100000 --out docs/results/scale.jsonl
    python tests/benchmarks/bench_scale.py --sizes 1000 5000 20000 --s3          # on moto's S3 server
    python tests/benchmarks/bench_scale.py --storage 1000x100                     # 1,000 commits of 100 units
    python tests/benchmarks/bench_scale.py --storage 3100x10 --s3                 # the 31k-unit, 10-hour job
    python tests/benchmarks/bench_scale.py --plot docs/results/scale-*.jsonl      # docs/benchmarks_scale.png
    python tests/benchmarks/bench_scale.py --ticks --sizes 1000 10000 100000 1000000 --bulk-workers 2 \
        --build-batch 10000 --no-verify-all                                      # a scheduled dataset to 1M units

One dataset grows through the sizes (built in commits of ``--build-batch`` units). At each size N:

- ``commit_s``: one more unit written and committed (a new version), mean over ``--commits`` commits in a row
  (so any periodic checkpoint is amortised) and their median; ``commit_first_s``, the first of them, apart: it
  also removes the pending records of the version before (format v4 keeps the latest version's until the next);
- ``writer_open_s``: opening a writer on it (append mode) and closing it without a change;
- ``open_s``: ``open_dataset`` (median of 5); ``first_batch_s``: open and the first shuffled batch of 256 rows;
- ``verify_since_s``: ``verify --since`` the version before the timed commits; ``vacuum_one_version_s``:
  ``vacuum --keep <versions - 1>``; ``writer_open_rss_mb``: peak RSS of a fresh process opening a writer;
- ``--ticks``: ``tick_nothing_new_s`` (``run_tick`` finding nothing new, median of 3) and ``tick_one_new_s`` (one
  new input of 5 lines: a real extraction on Ray), with ``tick_one_new_dataset_s``, all but the actors' run;
- on the S3 server, ``requests_*``: the requests each cost made (from the server's request log);
- ``metadata_bytes``: manifest.json and every version record (``_versions/``, ``_log/``, ``_checkpoints/``),
  statistics files apart;
- ``verify_s`` / ``verify_rss_mb`` and ``versions_s`` / ``versions_rss_mb``: ``actlake verify`` (all kept
  versions, checksums of every unit file) and ``actlake versions``, each in a fresh process (peak RSS of that
  process).

``--storage CxU``: a fresh dataset, C commits of U units each; the bytes of all version metadata against one copy
of the final unit list (as JSON, the way format v2 writes it: the basis of "N copies"). Results are appended to
``--out`` as JSON lines (one per size, tagged with the format version the checkout writes) and fitted: the
exponent b of cost ~ N^b between the smallest and the largest size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

HOOKS = {"h": {"shape": [4], "dtype": "float16"}}
META_DIRS = ("_versions", "_log", "_checkpoints")


def unit(uid: int) -> dict:
    if TICKS.cfg is not None:  # the schema a tick of tests.model_factories:tiny_gpt2 writes
        return {"example_id": np.array([10 * uid, 10 * uid + 1], dtype=np.int64) + TICKS.example_offset,
                "position": np.zeros(2, np.int32), "token_id": np.zeros(2, np.int32),
                "resid.1": np.full((2, 64), uid % 7, np.float16)}
    return {"example_id": np.array([2 * uid, 2 * uid + 1], dtype=np.int64),
            "position": np.zeros(2, np.int32), "h": np.full((2, 4), uid % 7, np.float16)}


class TICKS:
    """``--ticks``: the dataset is a scheduled one. A real tick (Ray, tests.model_factories:tiny_gpt2) creates it
    from one input; the bulk units are added in its schema; at each size a tick with nothing new and a tick with
    one new input (5 lines) run for real (``run_tick``: what `actlake schedule run` runs under its lease)."""

    cfg = None  #: the scheduled job's ExtractConfig
    corpus: Path | None = None
    example_offset = 1000  #: bulk units' example ids start here (after the seed tick's and the timed ticks')
    extract_s = 0.0  #: seconds inside the actors' run of the last tick (model, hooks: what no dataset size changes)


def seed_ticks(base: str, local: str) -> str:
    """The scheduled dataset (under ``base``), created by a first real tick of a corpus under ``local``; its URI.
    Sets HOOKS to its schema."""
    import ray

    import ingest.driver
    import shards
    from ingest.config import ExtractConfig
    from ingest.incremental import run_tick

    global HOOKS
    TICKS.corpus = Path(local) / "corpus"
    shutil.rmtree(TICKS.corpus, ignore_errors=True)
    TICKS.corpus.mkdir(parents=True)
    (TICKS.corpus / "seed.jsonl").write_text("".join(json.dumps({"text": f"seed line {i} about a harbour"}) + "\n"
                                                     for i in range(10)))
    uri = f"{base}/grow"
    TICKS.cfg = ExtractConfig(data=f"{TICKS.corpus}/*.jsonl", out=uri, model="tests.model_factories:tiny_gpt2",
                              hooks=["resid.1"], pool="mean", unit_size=5, batch_size=5, workers=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    real = ingest.driver._run_units

    def timed_run(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            TICKS.extract_s = time.perf_counter() - t0

    ingest.driver._run_units = timed_run  # timed, not replaced: the tick's own extraction is measured apart
    result = run_tick(TICKS.cfg)
    assert result.status == "extracted" and result.units_written == 2, result
    HOOKS = {h: spec.to_json() for h, spec in shards.open_dataset(uri).manifest.schema.hooks.items()}
    return uri


def measure_ticks(n: int) -> dict:
    """A tick with nothing new (median of 3) and one with one new input, on the dataset of ``n`` units."""
    from ingest.incremental import run_tick

    def nothing() -> None:
        r = run_tick(TICKS.cfg)
        assert r.status == "nothing new", r

    idle = timed(nothing, 3)
    idle_requests = requests_of(nothing)
    (TICKS.corpus / f"new-{n}.jsonl").write_text("".join(json.dumps({"text": f"new line {i} at {n}"}) + "\n"
                                                        for i in range(5)))
    t0 = time.perf_counter()
    before = REQUESTS.count if REQUESTS else 0
    r = run_tick(TICKS.cfg)
    one = time.perf_counter() - t0
    one_requests = REQUESTS.count - before if REQUESTS else None
    assert r.status == "extracted" and r.units_written == 1, r
    return {"tick_nothing_new_s": idle, "tick_one_new_s": one, "tick_one_new_extract_s": TICKS.extract_s,
            "tick_one_new_dataset_s": one - TICKS.extract_s,
            **({"requests_tick_nothing_new": idle_requests, "requests_tick_one_new": one_requests} if REQUESTS else {})}


def grow(uri: str, opts: dict | None, start: int, stop: int, batch: int,
         roots: list[int] | None = None) -> list[float]:
    """Units [start, stop) committed ``batch`` at a time (one version per batch); the seconds of each commit
    (``flush``: fold the batch's records, write the new version). ``roots``: gets the size of manifest.json after
    each commit (what every commit uploads besides its log entry)."""
    import shards
    from shards.storage import Storage

    st = Storage(uri, opts)
    flushes = []
    with shards.create_dataset(uri, HOOKS, mode="append", storage_options=opts, commit_interval=1e9) as w:
        start = max(start, w.units.max_id + 1)  # a seeded (--ticks) dataset has units already
        for u in range(start, stop):
            w.write_unit(u, unit(u))
            if (u + 1 - start) % batch == 0:
                t0 = time.perf_counter()
                w.flush()
                flushes.append(time.perf_counter() - t0)
                if roots is not None:
                    roots.append(st.size("manifest.json"))
    return flushes


def _write_range(args) -> list:
    """A worker process of ``grow_bulk``: units [lo, hi) written by a UnitWriter (what a Ray actor does), their
    commit records returned for the driver's writer to commit."""
    writer, lo, hi, ticks = args
    if ticks:  # a spawned process: the unit schema of the parent's run
        TICKS.cfg = TICKS.cfg or True
    return [writer.write(u, unit(u)) for u in range(lo, hi)]


def grow_bulk(uri: str, opts: dict | None, start: int, stop: int, batch: int, workers: int) -> None:
    """Units [start, stop) written the way an extraction job writes them: ``workers`` processes (Ray actors in a
    job) each write unit files and commit records with a UnitWriter, without fsync; the one writer commits their
    records and makes a version every ``batch`` units. The fastest honest way to a million units on two cores:
    the files, records and versions are those of a real job."""
    import multiprocessing as mp

    import shards

    with shards.create_dataset(uri, HOOKS, mode="append", storage_options=opts, commit_interval=1e9,
                               fsync=False) as w:
        start = max(start, w.units.max_id + 1)  # a seeded (--ticks) dataset has units already
        if start == 0:  # the first unit fixes the metadata columns (example_id, position)
            w.write_unit(0, unit(0))
            start = 1
        uw = w.unit_writer()
        chunk = 500
        tasks = [(uw, lo, min(lo + chunk, stop), TICKS.cfg is not None) for lo in range(start, stop, chunk)]
        done = 0
        with mp.get_context("spawn").Pool(workers) as pool:
            for records in pool.imap(_write_range, tasks):
                for r in records:
                    w.commit(r)
                done += len(records)
                if done >= batch:
                    w.flush()
                    done = 0
                    print(f"  built {len(w.units):,} units", file=sys.stderr, flush=True)


def commits(uri: str, opts: dict | None, first: int, n: int) -> list[float]:
    """``n`` commits of one unit each, ids from ``first``; the seconds of each (write, fold, new version)."""
    import shards

    out = []
    with shards.create_dataset(uri, HOOKS, mode="append", storage_options=opts, commit_interval=1e9) as w:
        for u in range(first, first + n):
            t0 = time.perf_counter()
            w.write_unit(u, unit(u))
            w.flush()
            out.append(time.perf_counter() - t0)
    return out


def timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def metadata_bytes(storage) -> dict:
    total = {"manifest": storage.size("manifest.json")}
    for d in META_DIRS:
        found = storage.find(d)
        total[d] = int(sum(int(i.get("size") or 0) for i in found.values()))
    stats = storage.find("stats")
    total["stats_files"] = int(sum(int(i.get("size") or 0) for i in stats.values()))
    total["versions_total"] = total["manifest"] + sum(total[d] for d in META_DIRS)
    return total


def in_process(code: str, env: dict) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of ``code`` run by a fresh Python: its own VmHWM (getrusage's ru_maxrss keeps the
    forking parent's peak across exec on Linux, and RUSAGE_CHILDREN the largest child so far)."""
    report = ("\nprint('RSS_KB', [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code + report], check=True, cwd=ROOT, env=env,
                         capture_output=True, text=True).stdout
    seconds = time.perf_counter() - t0
    return seconds, int(out.rsplit("RSS_KB", 1)[1].split()[0]) / 1024


def measure(uri: str, opts: dict | None, n: int, n_commits: int, env: dict, verify_all: bool = True) -> dict:
    """Every cost at size ``n``; the timed commits add units ``n .. n + n_commits - 1`` (ids in the order a job
    commits them)."""
    import shards
    from shards.manifest import FORMAT_VERSION
    from shards.storage import Storage

    st = Storage(uri, opts)
    req: dict[str, float | None] = {}
    got: list[float] = []
    req["commit"] = requests_of(lambda: got.extend(commits(uri, opts, n, n_commits)))
    req["commit"] = req["commit"] / n_commits if req["commit"] is not None else None  # per commit, with its open
    t0 = time.perf_counter()
    req["writer_open"] = requests_of(
        lambda: shards.create_dataset(uri, HOOKS, mode="append", storage_options=opts).close())
    writer_open = time.perf_counter() - t0
    req["open"] = requests_of(lambda: shards.open_dataset(uri, opts))
    open_s = timed(lambda: shards.open_dataset(uri, opts))

    def first_batch() -> None:
        ds = shards.open_dataset(uri, opts)
        it = iter(ds.iter_batches(next(iter(HOOKS)), batch_size=256, shuffle=True, seed=0, prefetch=0,
                                  shuffle_window=1024))
        next(it)
        it.close()

    first = timed(first_batch, 3)
    opts_arg = json.dumps(opts or {})
    since = shards.open_dataset(uri, opts).version - n_commits  # the timed commits are what changed since
    before = REQUESTS.count if REQUESTS else 0
    since_s, since_rss = in_process(
        f"import shards; r = shards.verify_dataset({uri!r}, {opts_arg}, since={since}); assert r.ok, r.lines()[:5]",
        env)
    req["verify_since"] = REQUESTS.count - before if REQUESTS else None
    open_s2, open_rss = in_process(
        f"import shards; shards.create_dataset({uri!r}, {HOOKS!r}, mode='append', storage_options={opts_arg}).close()",
        env)
    versions_now = shards.open_dataset(uri, opts).version
    t0 = time.perf_counter()
    from shards.versions import vacuum

    req["vacuum_one_version"] = requests_of(lambda: vacuum(uri, keep=versions_now - 1, storage_options=opts))
    vacuum_one = time.perf_counter() - t0  # one version removed
    ticks = measure_ticks(n) if TICKS.cfg is not None else {}
    verify_s, verify_rss = in_process(
        f"import shards; r = shards.verify_dataset({uri!r}, {opts_arg}); assert r.ok, r.lines()[:5]", env
    ) if verify_all else (None, None)
    versions_s, versions_rss = in_process(
        f"from shards.versions import versions; print(len(versions({uri!r}, {opts_arg})))", env)
    ds = shards.open_dataset(uri, opts)
    return {"n_units": len(ds.units), "format_version": FORMAT_VERSION, "versions": ds.version,
            # the first commit after a bulk version also removes that version's pending records (kept until the
            # next version): O(units of the previous version), reported apart
            "commit_first_s": got[0], "commit_s": statistics.mean(got[1:]), "commit_median_s": statistics.median(got),
            "writer_open_s": writer_open, "open_s": open_s, "first_batch_s": first,
            "verify_s": verify_s, "verify_rss_mb": verify_rss, "versions_s": versions_s,
            "versions_rss_mb": versions_rss, "verify_since_s": since_s, "verify_since_rss_mb": since_rss,
            "writer_open_rss_mb": open_rss, "vacuum_one_version_s": vacuum_one, **ticks,
            **{f"requests_{k}": v for k, v in req.items() if v is not None},
            **{f"bytes_{k}": v for k, v in metadata_bytes(st).items()}}


def fit(rows: list[dict], key: str) -> float | None:
    """The exponent b of ``key ~ n^b`` between the smallest and the largest size."""
    pts = [(r["n_units"], r[key]) for r in rows if r.get(key)]
    if len(pts) < 2:
        return None
    (n0, c0), (n1, c1) = pts[0], pts[-1]
    return round(float(np.log(c1 / c0) / np.log(n1 / n0)), 3)


def storage_test(uri: str, opts: dict | None, n_commits: int, per_commit: int) -> dict:
    import shards
    from shards.manifest import FORMAT_VERSION
    from shards.storage import Storage

    t0 = time.perf_counter()
    roots: list[int] = []
    flushes = grow(uri, opts, 0, n_commits * per_commit, per_commit, roots)
    seconds = time.perf_counter() - t0
    open_s = timed(lambda: shards.open_dataset(uri, opts))
    ds = shards.open_dataset(uri, opts)
    one_copy = len(json.dumps([u.to_json() for u in ds.units], indent=1).encode())
    one_copy_compact = len(json.dumps([u.to_json() for u in ds.units], separators=(",", ":")).encode())
    st = Storage(uri, opts)
    meta = metadata_bytes(st)
    # item 2 of issue 38: statistics bytes against one statistics file per hook per checkpoint kept
    from shards.versionlog import list_checkpoints

    stats_files = {k: int(v.get("size") or 0) for k, v in st.find("stats").items()}
    one_file = max(stats_files.values(), default=0)
    checkpoints = len(list_checkpoints(st))
    stats_vs = {"stats_files": len(stats_files), "stats_file_bytes": one_file, "checkpoints": checkpoints,
                "stats_vs_one_file_per_checkpoint": round(meta["stats_files"] / max(1, one_file * checkpoints), 2)}
    return {"storage_test": f"{n_commits}x{per_commit}", **stats_vs, "format_version": FORMAT_VERSION,
            "versions": ds.version,
            "n_units": len(ds.units), "seconds": round(seconds, 1), "commit_s_total": round(sum(flushes), 2),
            "commit_s_first100": statistics.mean(flushes[:100]), "commit_s_last100": statistics.mean(flushes[-100:]),
            "open_s": open_s, "one_copy_json_bytes": one_copy,
            "one_copy_compact_json_bytes": one_copy_compact, **{f"bytes_{k}": v for k, v in meta.items()},
            "copies": round(meta["versions_total"] / one_copy, 2),
            "root_bytes_uploaded": sum(roots), "root_bytes_max": max(roots, default=0)}


class Requests(logging.Handler):
    """Requests the S3 server answered, counted from its request log (the server runs in this process; the
    processes the benchmark starts talk to it too). What a cost is on real S3: requests, not moto's own time, which
    grows with the bucket (its listing filters every key in Python)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if any(f'"{m} ' in record.getMessage() for m in ("GET", "PUT", "HEAD", "DELETE", "POST")):
            self.count += 1


REQUESTS: Requests | None = None


def requests_of(fn) -> int | None:
    """The S3 requests ``fn()`` made (None off S3)."""
    if REQUESTS is None:
        fn()
        return None
    before = REQUESTS.count
    fn()
    return REQUESTS.count - before


def s3_server() -> tuple[str, object]:
    from moto.server import ThreadedMotoServer

    global REQUESTS
    REQUESTS = Requests()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(REQUESTS)
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="scale")
    return "s3://scale", server


PANELS = (("commit_s", "commit one more unit (s)"), ("writer_open_s", "open a writer to append (s)"),
          ("open_s", "open_dataset (s)"), ("first_batch_s", "open + first batch (s)"),
          ("verify_s", "verify, all versions (s)"), ("verify_since_s", "verify --since (16 versions) (s)"),
          ("vacuum_one_version_s", "vacuum one version (s)"), ("versions_s", "`versions` (s)"),
          ("verify_rss_mb", "verify peak RSS (MB)"), ("writer_open_rss_mb", "append-open peak RSS (MB)"),
          ("bytes_versions_total", "version metadata (bytes)"), ("bytes_stats_files", "statistics files (bytes)"),
          ("tick_nothing_new_s", "tick, nothing new (s)"),
          ("tick_one_new_dataset_s", "tick, one new input: all but the actors' run (s)"),
          ("requests_writer_open", "S3 requests: open a writer to append"),
          ("requests_commit", "S3 requests per one-unit commit"))


def plot(paths: list[str], out: str) -> None:
    """Log-log panels of every cost against N, one line per (format, where), from ``--out`` files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    runs: dict[tuple, list[dict]] = {}
    for r in rows:
        if "size" in r:
            runs.setdefault((r["label"], r["where"]), []).append(r)
    fig, axes = plt.subplots(4, 4, figsize=(16, 14))
    for ax in axes.flat[len(PANELS):]:
        ax.set_visible(False)
    for ax, (key, title) in zip(axes.flat, PANELS, strict=False):
        for (label, where), pts in sorted(runs.items()):
            pts = sorted(pts, key=lambda r: r["n_units"])
            pts = [r for r in pts if r.get(key)]
            if not pts:
                continue
            xs, ys = [r["n_units"] for r in pts], [r[key] for r in pts]
            b = fit(pts, key)
            ax.loglog(xs, ys, "o-" if label.startswith("v4") else "s--", markersize=8 if len(xs) == 1 else 5,
                      label=f"{label} {where}" + (f" (b={b:.2f})" if b is not None else ""))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("units in the dataset")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Format metadata costs against dataset size (tiny units; b: fitted exponent, cost ~ N^b)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 20000, 100000])
    ap.add_argument("--build-batch", type=int, default=1000, help="units per commit while growing")
    ap.add_argument("--bulk-workers", type=int, default=0, help="grow with this many writer processes (as a job's "
                    "actors write: UnitWriter, no fsync; the driver commits) instead of one in-process writer")
    ap.add_argument("--no-verify-all", action="store_true", help="skip the full verify (minutes at 1M units)")
    ap.add_argument("--ticks", action="store_true", help="a scheduled dataset: seeded by a real tick (Ray, a tiny "
                    "model), and at each size a tick with nothing new and one with one new input")
    ap.add_argument("--commits", type=int, default=32, help="one-unit commits timed at each size")
    ap.add_argument("--s3", action="store_true", help="on moto's S3 server on loopback instead of local disk")
    ap.add_argument("--storage", default=None, help="CxU: C commits of U units, then the bytes of all versions "
                    "(3100x10 is the 31k-unit, 10-hour job of issue 25: a fold every 10 s)")
    ap.add_argument("--dir", default=str(ROOT / "bench-data" / "scale"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--label", default="")
    ap.add_argument("--plot", nargs="*", default=None, help="plot these --out files to --png and stop")
    ap.add_argument("--png", default=str(ROOT / "docs" / "benchmarks_scale.png"))
    a = ap.parse_args()
    if a.plot:
        plot(a.plot, a.png)
        return
    from shards.manifest import FORMAT_VERSION

    server = None
    if a.s3:
        base, server = s3_server()
    else:
        base = a.dir
        shutil.rmtree(base, ignore_errors=True)
        Path(base).mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    try:
        if a.storage:
            c, u = (int(x) for x in a.storage.split("x"))
            rows.append({"where": "s3" if a.s3 else "local", **storage_test(f"{base}/storage", None, c, u)})
            print(json.dumps(rows[-1]), flush=True)
        uri, have = f"{base}/grow", 0
        if a.ticks and not a.storage:
            uri = seed_ticks(base, a.dir)
        for n in a.sizes if not a.storage else []:
            t0 = time.perf_counter()
            if a.bulk_workers:
                grow_bulk(uri, None, have, n, a.build_batch, a.bulk_workers)
            else:
                grow(uri, None, have, n, a.build_batch)
            built = time.perf_counter() - t0
            have = n + a.commits  # measure() commits the next ids
            row = {"label": a.label or f"v{FORMAT_VERSION}", "where": "s3" if a.s3 else "local", "size": n,
                   "build_s": round(built, 1), **measure(uri, None, n, a.commits, env, not a.no_verify_all)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        grown = [r for r in rows if "size" in r]
        if len(grown) > 1:
            fits = {k: fit(grown, k) for k in ("commit_s", "writer_open_s", "open_s", "first_batch_s", "verify_s",
                                               "versions_s", "verify_since_s", "vacuum_one_version_s",
                                               "writer_open_rss_mb", "tick_nothing_new_s",
                                               "tick_one_new_s", "tick_one_new_dataset_s", "requests_commit",
                                               "requests_writer_open", "requests_open", "requests_verify_since",
                                               "requests_vacuum_one_version", "requests_tick_nothing_new",
                                               "requests_tick_one_new", "bytes_manifest", "bytes_versions_total",
                                               "bytes_stats_files")}
            rows.append({"label": grown[0]["label"], "where": grown[0]["where"], "fitted_exponents": fits})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.stop()
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps({"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), **r}) + "\n")


if __name__ == "__main__":
    main()

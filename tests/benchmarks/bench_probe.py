"""Probing a layer sweep: actlake probe against scikit-learn's LogisticRegression on the same rows and folds.

    python tests/benchmarks/bench_probe.py [--rows 500000] [--hooks 7] [--dim 384] [--sklearn-hooks 7]
        [--json out.jsonl]

Data: a synthetic token-level dataset (float16, ``--hooks`` hooks x ``--rows`` rows x ``--dim``), 5 classes, one
label per example of 16 tokens, anisotropic features (a decaying spectrum, as activations have) whose class
signal grows with depth. Each side runs in its own process, so each peak RSS is its own:

- actlake: ``actlake probe --reg 1 --folds 5`` (C = 1, no control), whole run timed: reading, fitting, writing.
- scikit-learn: the hook's rows already in memory as float32, standardised with the dataset's statistics as
  actlake does, ``LogisticRegression(C=1)`` (lbfgs, its defaults) on each of actlake's 5 folds; only the fits
  are timed (the time a user would spend once the data is loaded).

Reported per side: wall time, mean accuracy per hook, peak RSS and peak RSS above the process's RSS after imports
(both include the page cache of memory-mapped dataset files), and the peak of anonymous memory (RssAnon, sampled
every 20 ms) above its value after imports: the memory the side allocated.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Peak resident set (file-backed pages included: the reader's memory-mapped dataset files count)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def anon_mb() -> float:
    """Anonymous resident memory now (what the process allocated; page cache of mapped files excluded)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


class PeakAnon:
    """Samples ``anon_mb`` every 20 ms in a thread; ``peak`` is the largest seen."""

    def __init__(self) -> None:
        import threading

        self.peak, self.base = 0.0, anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, anon_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, anon_mb())


def make_dataset(path: str, rows: int, hooks: int, dim: int, seed: int = 0) -> None:
    import shards

    rng = np.random.default_rng(seed)
    tokens, classes = 16, 5
    examples = rows // tokens
    labels = rng.integers(0, classes, examples)
    mix = rng.standard_normal((dim, dim)) * (0.97 ** np.arange(dim))[:, None]  # decaying spectrum
    dirs = rng.standard_normal((classes, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    spec = {f"resid.{i}": {"shape": [dim], "dtype": "float16"} for i in range(hooks)}
    per_unit = 4096  # examples per unit
    with shards.create_dataset(path, spec, columns={"label": "string"}, mode="overwrite") as w:
        for u, start in enumerate(range(0, examples, per_unit)):
            ex = np.arange(start, min(start + per_unit, examples))
            n = len(ex) * tokens
            cols = {"example_id": np.repeat(ex, tokens).astype(np.int64),
                    "position": np.tile(np.arange(tokens), len(ex)).astype(np.int32),
                    "token_id": rng.integers(0, 30000, n).astype(np.int32),
                    "label": np.array([f"c{c}" for c in np.repeat(labels[ex], tokens)], dtype=object)}
            for i in range(hooks):
                signal = 2.0 * (i + 1) / hooks  # accuracy rises with depth, from near chance
                x = rng.standard_normal((n, dim)).astype(np.float32) @ mix.astype(np.float32)
                x += rng.standard_normal((n, dim)).astype(np.float32)  # no direction is noise-free
                x += signal * np.repeat(dirs[labels[ex]], tokens, 0).astype(np.float32)
                cols[f"resid.{i}"] = x.astype(np.float16)
            w.write_unit(u, cols)


def side_actlake(data: str, out: str) -> dict:
    import matplotlib.pyplot  # noqa: F401 - imported before the baseline RSS, as the sklearn side's are
    import scipy.stats  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    from analysis.probe.config import ProbeConfig
    from analysis.probe.run import run

    base, anon = current_rss_mb(), PeakAnon()
    t0 = time.perf_counter()
    s = run(ProbeConfig(data=data, hooks=["resid.*"], label="label", reg=["1"], out=out, overwrite=True))
    wall = time.perf_counter() - t0
    peak_anon = anon.stop()
    return {"side": "actlake", "seconds": round(wall, 2), "accuracy": {h: v["mean"] for h, v in s.hooks.items()},
            "peak_rss_mb": round(rss_mb()), "peak_above_start_mb": round(rss_mb() - base),
            "peak_anon_above_start_mb": round(peak_anon - anon.base)}


def side_sklearn(data: str, out: str, n_hooks: int) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    import shards
    from analysis.probe.config import ProbeConfig
    from analysis.probe.targets import plan_probe

    ds = shards.open_dataset(data)
    plan = plan_probe(ProbeConfig(data=data, hooks=["resid.*"], label="label", out=out), ds)
    base, anon = current_rss_mb(), PeakAnon()
    fit_seconds, acc = 0.0, {}
    for h in ds.hooks[:n_hooks]:
        st = ds.stats(h)
        x = ((ds.to_numpy(h, dtype="float32") - st.mean.astype(np.float32)) / st.std.astype(np.float32))[plan.rows]
        scores = []
        for f in range(plan.folds):
            tr, te = plan.fold != f, plan.fold == f
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                m = LogisticRegression(C=1.0).fit(x[tr], plan.y[tr])
            fit_seconds += time.perf_counter() - t0
            scores.append(m.score(x[te], plan.y[te]))
        acc[h] = float(np.mean(scores))
        del x
    peak_anon = anon.stop()
    return {"side": "sklearn", "seconds": round(fit_seconds, 2), "hooks_timed": n_hooks, "accuracy": acc,
            "peak_rss_mb": round(rss_mb()), "peak_above_start_mb": round(rss_mb() - base),
            "peak_anon_above_start_mb": round(peak_anon - anon.base)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--hooks", type=int, default=7)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--sklearn-hooks", type=int, default=None, help="hooks scikit-learn fits (default: all)")
    p.add_argument("--dir", default="bench-data/probe")
    p.add_argument("--json", default=None)
    p.add_argument("--reuse", action="store_true", help="reuse the dataset of an earlier run in --dir")
    p.add_argument("--side", choices=["actlake", "sklearn"], default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    data, out = f"{a.dir}/dataset", f"{a.dir}/out"
    if a.side in ("actlake", "sklearn") and not Path(data).exists():
        sys.exit("no dataset: run without --side first")
    if a.side == "actlake":
        print(json.dumps(side_actlake(data, out)))
        return
    if a.side == "sklearn":
        print(json.dumps(side_sklearn(data, out, a.sklearn_hooks or a.hooks)))
        return
    if not a.reuse:
        shutil.rmtree(a.dir, ignore_errors=True)
        t0 = time.perf_counter()
        make_dataset(data, a.rows, a.hooks, a.dim)
        print(f"dataset written in {time.perf_counter() - t0:.0f}s", flush=True)
    results = {}
    for side in ("actlake", "sklearn"):
        cmd = [sys.executable, __file__, "--side", side, "--dir", a.dir, "--hooks", str(a.hooks)]
        if a.sklearn_hooks:
            cmd += ["--sklearn-hooks", str(a.sklearn_hooks)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[side] = json.loads(done.stdout.splitlines()[-1])
        print(json.dumps(results[side]), flush=True)
    ours, ref = results["actlake"], results["sklearn"]
    per_hook_ref = ref["seconds"] / ref["hooks_timed"]
    hooks_common = list(ref["accuracy"])
    summary = {"bench": "probe", "date": time.strftime("%Y-%m-%d"), "rows": a.rows, "hooks": a.hooks, "dim": a.dim,
               "actlake_seconds": ours["seconds"], "sklearn_seconds_per_hook": round(per_hook_ref, 2),
               "speedup_per_hook": round(per_hook_ref / (ours["seconds"] / a.hooks), 2),
               "max_accuracy_gap_pp": round(100 * max(abs(ours["accuracy"][h] - ref["accuracy"][h])
                                                      for h in hooks_common), 3),
               "hook_float32_mb": round(a.rows * a.dim * 4 / 2**20),
               "actlake_peak_anon_above_start_mb": ours["peak_anon_above_start_mb"],
               "actlake_peak_above_start_mb": ours["peak_above_start_mb"], "actlake_peak_rss_mb": ours["peak_rss_mb"],
               "sklearn_peak_anon_above_start_mb": ref["peak_anon_above_start_mb"],
               "sklearn_peak_above_start_mb": ref["peak_above_start_mb"], "sklearn_peak_rss_mb": ref["peak_rss_mb"],
               "results": results}
    print(json.dumps(summary), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()

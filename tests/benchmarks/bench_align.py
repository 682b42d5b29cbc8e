"""Alignment speed against the reference libraries in the same run (docs/benchmarks.md, "Alignment").

    python tests/benchmarks/bench_align.py --rsa-n 5000 --rsa-d 4096 --boot-n 1000 --boot 1000 \
        --cka-n 100000 --enc-targets 10000 --out docs/results/align-DATE.jsonl

1. Correlation RDM + Spearman comparison at N stimuli x D features: actlake vs rsatoolbox (equal results).
2. Bootstrap over stimuli and subjects, Spearman, N stimuli x S subjects: actlake's weighted resampling vs
   rsatoolbox's (one rsatoolbox resample timed, multiplied by the count).
3. Debiased linear CKA of two 384-d hooks streamed from a dataset of N rows (time, peak RSS growth) vs a
   Gram-matrix implementation at N = 8,000.
4. Encoding: 78 stimuli (Net2Brain's ResNet-18 layer4 features, 25,088-d) x T targets, 5 outer x 5 inner folds:
   actlake ridge_cv vs himalaya RidgeCV (primal SVD solver) on the same folds and alphas.
"""

from __future__ import annotations

import argparse
import atexit
import json
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import shards  # noqa: E402
from analysis.align import compare, rdm  # noqa: E402
from analysis.align.inference import bootstrap  # noqa: E402
from analysis.align.vectors import condensed  # noqa: E402
from tests.shared_data import DATA  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_rsa(n: int, d: int) -> dict:
    import rsatoolbox as rt

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32).astype(np.float64)
    brain = condensed(rdm(rng.normal(size=(n, 64))))
    t0 = time.perf_counter()
    ours_rdm = rdm(x, "correlation")
    t1 = time.perf_counter()
    ours = compare(ours_rdm, brain, "spearman")
    t2 = time.perf_counter()
    ref_rdm = rt.rdm.calc_rdm(rt.data.Dataset(x), method="correlation")
    t3 = time.perf_counter()
    ref = rt.rdm.compare(ref_rdm, rt.rdm.RDMs(brain[None]), "spearman")[0, 0]
    t4 = time.perf_counter()
    return {"bench": "rdm+spearman", "n": n, "d": d, "actlake_rdm_s": t1 - t0, "actlake_spearman_s": t2 - t1,
            "rsatoolbox_rdm_s": t3 - t2, "rsatoolbox_spearman_s": t4 - t3,
            "speedup": (t4 - t2) / (t2 - t0), "abs_diff": abs(ours - ref),
            "rdm_max_diff": float(np.abs(condensed(ours_rdm) - ref_rdm.get_vectors()[0]).max())}


def bench_bootstrap(n: int, subjects: int, resamples: int) -> dict:
    import rsatoolbox as rt
    from rsatoolbox.inference import bootstrap_sample

    rng = np.random.default_rng(1)
    base = rng.normal(size=(n, 32))
    model = condensed(rdm(base))
    subj = np.stack([condensed(rdm(base + rng.normal(size=base.shape) * 2)) for _ in range(subjects)])
    t0 = time.perf_counter()
    boot = bootstrap(model, subj, "spearman", resamples, seed=0, over="both")
    t1 = time.perf_counter()
    data = rt.rdm.RDMs(subj)
    m = rt.rdm.RDMs(model[None])
    t2 = time.perf_counter()
    sample, rdm_idx, pattern_idx = bootstrap_sample(data)
    rt.rdm.compare(m.subsample_pattern("index", pattern_idx), sample, "spearman").mean()
    t3 = time.perf_counter()
    return {"bench": "bootstrap", "n": n, "subjects": subjects, "resamples": resamples, "actlake_s": t1 - t0,
            "rsatoolbox_one_resample_s": t3 - t2, "rsatoolbox_estimated_s": (t3 - t2) * resamples,
            "speedup": (t3 - t2) * resamples / (t1 - t0), "ci": [float(np.quantile(boot, 0.025)),
                                                              float(np.quantile(boot, 0.975))]}


def bench_cka(n: int, d: int = 384) -> dict:
    from analysis.align.config import CkaConfig
    from analysis.align.metrics.cka import gram_cka
    from analysis.align.pairs_run import run

    rng = np.random.default_rng(2)
    tmp = tempfile.mkdtemp(prefix="bench-cka-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # n rows x 2 hooks: gone when the script ends
    spec = {"a": {"shape": [d], "dtype": "float16"}, "b": {"shape": [d], "dtype": "float16"}}
    w_mix = rng.normal(size=(d, d)) / np.sqrt(d)
    with shards.create_dataset(f"{tmp}/ds", spec) as w:
        for u, start in enumerate(range(0, n, 20_000)):
            m = min(20_000, n - start)
            a = rng.normal(size=(m, d))
            b = np.tanh(a @ w_mix) + 0.5 * rng.normal(size=(m, d))
            w.write_unit(u, {"a": a.astype(np.float16), "b": b.astype(np.float16),
                             "example_id": np.arange(start, start + m), "position": np.zeros(m, np.int32)})
    before = rss_mb()
    t0 = time.perf_counter()
    s = run(CkaConfig(data=f"{tmp}/ds", hooks=["a", "b"], debiased=True, out=f"{tmp}/out"))
    t1 = time.perf_counter()
    grown = rss_mb() - before
    ds = shards.open_dataset(f"{tmp}/ds")
    k = 8000
    xa, xb = ds.to_numpy("a")[:k].astype(np.float64), ds.to_numpy("b")[:k].astype(np.float64)
    t2 = time.perf_counter()
    xa -= xa.mean(0)
    xb -= xb.mean(0)
    g = gram_cka(xa @ xa.T, xb @ xb.T, debiased=True)
    t3 = time.perf_counter()
    return {"bench": "cka", "n": n, "d": d, "streamed_s": t1 - t0, "rss_growth_mb": grown,
            "state_mb": s.peak_state_bytes / 2 ** 20, "score": s.pairs[0]["score"], "gram_n": k,
            "gram_s": t3 - t2, "gram_score_at_8000": g}


def bench_encode(targets: int) -> dict:
    from himalaya.ridge import RidgeCV
    from sklearn.model_selection import KFold

    from analysis.align.ridge import ridge_cv

    x = np.stack([np.load(DATA / "net2brain78" / "resnet18_layer3.1.conv2" / f"ResNet18_image_{i:02d}.npz")
                  ["layer4.1.bn2"].reshape(-1) for i in range(1, 79)]).astype(np.float64)
    rng = np.random.default_rng(3)
    y = (x - x.mean(0)) @ rng.normal(size=(x.shape[1], targets)) / np.sqrt(x.shape[1])
    y += rng.normal(size=y.shape) * y.std(0)
    alphas = np.logspace(0, 8, 9)
    t0 = time.perf_counter()
    ours = ridge_cv(x, y, alphas, 5, 5, score="neg_mse")
    t1 = time.perf_counter()
    pred = np.empty_like(y)
    for tr, te in KFold(5).split(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = RidgeCV(alphas=alphas, cv=KFold(5), fit_intercept=True).fit(x[tr], y[tr])
        pred[te] = np.asarray(m.predict(x[te]))
    t2 = time.perf_counter()
    return {"bench": "encode", "n": 78, "d": x.shape[1], "targets": targets, "actlake_s": t1 - t0,
            "himalaya_s": t2 - t1, "speedup": (t2 - t1) / (t1 - t0),
            "max_pred_diff": float(np.abs(pred - ours.predictions).max())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rsa-n", type=int, default=5000)
    p.add_argument("--rsa-d", type=int, default=4096)
    p.add_argument("--boot-n", type=int, default=1000)
    p.add_argument("--boot-subjects", type=int, default=10)
    p.add_argument("--boot", type=int, default=1000)
    p.add_argument("--cka-n", type=int, default=100_000)
    p.add_argument("--enc-targets", type=int, default=10_000)
    p.add_argument("--only", nargs="*", default=["rsa", "bootstrap", "cka", "encode"])
    p.add_argument("--out", default=None)
    a = p.parse_args()
    runs = {"rsa": lambda: bench_rsa(a.rsa_n, a.rsa_d),
            "bootstrap": lambda: bench_bootstrap(a.boot_n, a.boot_subjects, a.boot),
            "cka": lambda: bench_cka(a.cka_n), "encode": lambda: bench_encode(a.enc_targets)}
    for name in a.only:
        res = {**runs[name](), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
        print(json.dumps(res), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()

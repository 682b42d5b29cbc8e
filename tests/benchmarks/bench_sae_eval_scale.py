"""`sae evaluate` at scale: the suite's time per metric on 1M rows x d = 576 (synthetic, with ground truth) and on
real MiniLM activations of `builtin:prose` (2.07M rows x 384: core on the held-out documents, sparse probing,
absorption).

    python tests/benchmarks/bench_sae_eval_scale.py --work /tmp/evalscale --prose /path/prose-minilm \
        --json docs/results/sae-eval-scale.jsonl

Each SAE is trained briefly (quality is not what is measured here): TopK, k = 32, 8x.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from analysis.sae.config import SaeTrainConfig  # noqa: E402
from analysis.sae.evaluate import SaeEvaluateConfig  # noqa: E402
from analysis.sae.evaluate import run as evaluate  # noqa: E402
from analysis.sae.synth_command import SaeSynthConfig  # noqa: E402
from analysis.sae.synth_command import run as synth  # noqa: E402
from analysis.sae.synthetic import SyntheticConfig  # noqa: E402
from analysis.sae.train import run as train_sae  # noqa: E402


def record(path: str | None, **kw) -> None:
    kw["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(kw), flush=True)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(kw) + "\n")


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/evalscale")
    p.add_argument("--prose", default=None, help="a builtin:prose MiniLM dataset (resid.3)")
    p.add_argument("--rows", default="1M")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count() or 2
    gen = SyntheticConfig(d=576, n_features=4608, mean_active=20, parents=64, children=4, correlated_pairs=64)
    _, t_synth = timed(synth, SaeSynthConfig(out=str(work / "syn"), rows=args.rows, generator=gen, overwrite=True))
    record(args.json, bench="sae-eval-scale", step="sae synth", rows=args.rows, d=576, seconds=round(t_synth, 1))
    train_sae(SaeTrainConfig(data=str(work / "syn"), hook=["x"], k=["32"], expansion=["8"], tokens="400k",
                             out=str(work / "syn-sae"), checkpoint_every=0, threads=threads, overwrite=True))
    ev, t = timed(evaluate, SaeEvaluateConfig(sae=str(work / "syn-sae"), suite=["core", "synthetic"], rows="all",
                                              max_rows=args.rows, out=str(work / "syn-eval"), overwrite=True))
    record(args.json, bench="sae-eval-scale", step="sae evaluate", data="synthetic", rows=ev.rows, d=576,
           d_sae=4608, seconds=round(t, 1), per_metric={k: v["seconds"] for k, v in ev.metrics.items()},
           mcc=ev.metrics["synthetic"]["mcc"], fvu=ev.metrics["core"]["fvu"])
    if args.prose:
        train_sae(SaeTrainConfig(data=args.prose, hook=["resid.3"], k=["32"], expansion=["8"], tokens="2M",
                                 out=str(work / "prose-sae"), checkpoint_every=0, threads=threads, overwrite=True))
        ev, t = timed(evaluate, SaeEvaluateConfig(sae=str(work / "prose-sae"), max_rows="1M",
                                                  out=str(work / "prose-eval"), overwrite=True))
        record(args.json, bench="sae-eval-scale", step="sae evaluate", data="prose-minilm", rows=ev.rows, d=384,
               d_sae=3072, seconds=round(t, 1), per_metric={k: v["seconds"] for k, v in ev.metrics.items()},
               metrics={k: {m: v[m] for m in v if isinstance(v[m], (int, float))} for k, v in ev.metrics.items()},
               sparse_probing=ev.metrics.get("sparse_probing", {}).get("accuracy_by_k"))


if __name__ == "__main__":
    main()

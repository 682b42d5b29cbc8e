"""Transcoder and crosscoder steps against an SAE of the same width, on the same in-memory batches.

    python tests/benchmarks/bench_sae_transcoder.py --data /path/prose-minilm --hook resid.3 --target mlp.3

One TopK dictionary each (k = 32, d_sae = 8 x 384): an SAE of --hook, a transcoder --hook -> --target, the same
with a skip connection, and a crosscoder over both hooks (twice the input width, so twice the latents at the same
expansion; here the same d_sae, for the same latent count). The trainers' steps are timed in interleaved rounds
(3 x 30 steps each, 2 warm-up steps), batch 4096, threads = cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import shards  # noqa: E402
from analysis.sae.registry import create_sae  # noqa: E402
from analysis.sae.trainer import SaeSpec, SaeTrainer, Schedule, default_lr  # noqa: E402

BATCH = 4096


def trainer_for(kind: str, hook: str, target: str, d: int, d_sae: int, k: int) -> SaeTrainer:
    ins = [hook, target] if kind == "crosscoder" else [hook]
    outs = [target] if kind.startswith("transcoder") else ins
    d_in = d * len(ins)
    sae = create_sae("topk", d_in, d_sae, k)
    if kind.startswith("transcoder"):
        sae.make_transcoder(d, skip=kind.endswith("skip"))
    spec = SaeSpec(name=kind, hook=hook, arch="topk", k=k, expansion=d_sae // d_in, d_in=d_in, d_sae=d_sae,
                   lr=default_lr(d_sae), in_hooks=ins, out_hooks=outs, d_out=d, skip=kind.endswith("skip"))
    sched = Schedule(steps=10**6, batch_size=BATCH, warmup=1, decay_frac=0.0, dead_tokens=10**9)
    return SaeTrainer([spec], {kind: sae}, {hook: 1.0, target: 1.0}, sched)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--hook", default="resid.3")
    p.add_argument("--target", default="mlp.3")
    p.add_argument("--rows", type=int, default=131072)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    ds = shards.open_dataset(args.data)
    rows = np.sort(np.random.default_rng(0).choice(ds.num_rows, args.rows, replace=False))
    got = ds.take(rows, hooks=[args.hook, args.target], columns=[], dtype="float32")
    d = got[args.hook].shape[1]
    batches = [{h: got[h][i:i + BATCH] for h in (args.hook, args.target)} for i in range(0, args.rows, BATCH)]
    kinds = ["sae", "transcoder", "transcoder-skip", "crosscoder"]
    trainers = {kd: trainer_for(kd, args.hook, args.target, d, 8 * d, 32) for kd in kinds}
    times: dict[str, list[float]] = {kd: [] for kd in kinds}
    for tr in trainers.values():
        for b in batches[:2]:
            tr.step(b)
    for _round in range(3):
        for kd, tr in trainers.items():
            t = time.perf_counter()
            for b in batches[2:32]:
                tr.step(b)
            times[kd].append((time.perf_counter() - t) / 30)
    base = float(np.median(times["sae"]))
    for kd in kinds:
        row = {"bench": "sae-transcoder-step", "kind": kd, "d_in": d, "d_sae": 8 * d, "k": 32, "batch": BATCH,
               "s_per_step": float(np.median(times[kd])), "vs_sae": float(np.median(times[kd])) / base,
               "rounds": times[kd], "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

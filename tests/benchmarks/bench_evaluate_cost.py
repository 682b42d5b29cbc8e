"""`sae evaluate`'s default suite (core, sparse_probing, absorption) against the number of examples: each
metric's seconds, the estimate printed before the run, and fitted exponents (issue 42).

    python tests/benchmarks/bench_evaluate_cost.py --data /work/interp/prose --sae /work/interp/prose-topk \
        --examples 500 1000 2000 4000 8000 --work /tmp/evcost --json docs/results/evaluate-cost-2026-12-07.jsonl

Each size is the first N examples of ``--data`` (``actlake copy --examples 0:N``), evaluated with ``--rows all``
by the SAE trained on the whole dataset, in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ACTLAKE = str(Path(sys.executable).with_name("actlake"))


def one(data: str, sae: str, n: int, work: Path) -> dict:
    sub = work / f"ex{n}"
    if not (sub / "manifest.json").exists():
        subprocess.run([ACTLAKE, "copy", data, str(sub), "--examples", f"0:{n}"], check=True, capture_output=True)
    out = work / f"eval{n}"
    t0 = time.perf_counter()
    done = subprocess.run([ACTLAKE, "sae", "evaluate", "--sae", sae, "--data", str(sub), "--rows", "all",
                           "--out", str(out), "--overwrite"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    s = json.loads((out / "summary.json").read_text())
    rows = int(s["rows"].split("(")[1].rstrip(")"))
    return {"examples": n, "rows": rows, "wall_s": round(wall, 1), "suite_s": s["cost"]["seconds"],
            "estimated_s": s["cost"]["estimated_seconds"],
            "metrics": {k: {"seconds": v.get("seconds"), "estimated": v.get("estimated_seconds")}
                        for k, v in s["metrics"].items()}}


def exponent(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(np.maximum(ys, 1e-3)), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--sae", required=True)
    ap.add_argument("--examples", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000])
    ap.add_argument("--work", default="/tmp/evcost")
    ap.add_argument("--json")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    res = []
    for n in a.examples:
        res.append(one(a.data, a.sae, n, work))
        print(json.dumps(res[-1]), flush=True)
    rows = [r["rows"] for r in res]
    fits = {m: round(exponent(rows, [r["metrics"][m]["seconds"] for r in res]), 2) for m in res[0]["metrics"]}
    fits["suite"] = round(exponent(rows, [r["suite_s"] for r in res]), 2)
    print(json.dumps({"exponents_vs_rows": fits}), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            for r in res:
                f.write(json.dumps({"date": time.strftime("%F"), **r}) + "\n")
            f.write(json.dumps({"date": time.strftime("%F"), "exponents_vs_rows": fits}) + "\n")


if __name__ == "__main__":
    main()

"""Causal probing by layer for docs/probing.md: MiniLM over the built-in corpus, the concept label probed at every
residual layer, then erased (the probe run's class diff-in-means directions projected out) at one layer during
extraction and probed again.

    python tests/benchmarks/bench_causal_probe.py --n 2000 --layers 1,3 --out /tmp/causal
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tests.integration.test_causal_probing import erase_and_probe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--layers", default="1,3")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    hooks = [f"resid.{i}" for i in range(6)]
    rows = []
    for layer in map(int, args.layers.split(",")):
        t0 = time.perf_counter()
        before, after, chance = erase_and_probe(f"{args.out}/erase-{layer}", layer, args.n, hooks)
        rows.append({"erased_at": f"resid.{layer}", "chance": chance, "before": before, "after": after,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]))
    Path(args.out, "causal_probe.json").write_text(json.dumps(rows, indent=1))
    print("| hook | clean | " + " | ".join(f"erased at {r['erased_at']}" for r in rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for h in hooks:
        print(f"| {h} | {rows[0]['before'][h]:.3f} | " + " | ".join(f"{r['after'][h]:.3f}" for r in rows) + " |")


if __name__ == "__main__":
    main()

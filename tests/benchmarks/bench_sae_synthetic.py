"""Every SAE architecture on the synthetic benchmark (``analysis.sae.synthetic``: known features with Zipfian firing,
a hierarchy and correlated pairs), at equal width and about equal L0, several seeds.

    python tests/benchmarks/bench_sae_synthetic.py --json docs/results/sae-synthetic.jsonl \
        --plot docs/img/sae-synthetic.png

Width = the number of true features; k = the data's mean L0 rounded up. ReLU's L1 and JumpReLU's L0 coefficients
are calibrated first (a bisection on short runs, seed 0) to land within 15 % of that L0. Every SAE trains on fresh
rows (never the 16,384 evaluation rows) with `sae train`'s defaults and is scored on the evaluation rows: MCC
(Hungarian matching of decoder rows to true features), uniqueness, recovered features (|cos| >= 0.9), per-latent
precision and recall, FVU and L0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from analysis.sae.registry import get_architecture  # noqa: E402
from analysis.sae.synthetic import SyntheticConfig, SyntheticData, fit_synthetic  # noqa: E402

ARCHS = ["relu", "topk", "batchtopk", "jumprelu", "matryoshka", "mp", "snmf"]
COEFF = {"relu": "l1_coeff", "jumprelu": "l0_coeff"}


def calibrate(data: SyntheticData, arch: str, target: float, d_sae: int, steps: int) -> float:
    """The coefficient (geometric bisection) whose short run reaches L0 within 15 % of ``target``."""
    lo, hi, coeff = 0.05, 50.0, 1.0
    for _ in range(8):
        fit = fit_synthetic(data, arch, d_sae, None, steps=steps, batch_size=2048,
                            options=get_architecture(arch).options(**{COEFF[arch]: coeff}))[1]
        print(json.dumps({"calibrate": arch, "coeff": coeff, "l0": fit.l0}), flush=True)
        if abs(fit.l0 - target) <= 0.15 * target:
            break
        lo, hi = (coeff, hi) if fit.l0 > target else (lo, coeff)
        coeff = math.sqrt(lo * hi)
    return coeff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--archs", nargs="+", default=ARCHS)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    data = SyntheticData(SyntheticConfig())
    _, acts = data.rows(0, 16384)
    l0 = float((acts > 0).sum(1).mean())
    k, width = math.ceil(l0), data.cfg.n_features
    coeffs = {a: calibrate(data, a, k, width, 400) for a in args.archs if a in COEFF}
    for seed in args.seeds:
        for arch in args.archs:
            opts = get_architecture(arch).options(**({COEFF[arch]: coeffs[arch]} if arch in COEFF else {}))
            fit = fit_synthetic(data, arch, width, k, steps=args.steps, batch_size=2048, seed=seed, options=opts)[1]
            row = {"bench": "sae-synthetic", "seed": seed, "data_l0": l0, "coeff": coeffs.get(arch),
                   "date": time.strftime("%Y-%m-%d"), **fit.to_json()}
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    if args.plot and args.json:
        plot(args.json, args.plot)


def plot(jsonl: str, png: str) -> None:
    """MCC, recovered features, precision and recall per architecture (mean and each seed); a markdown table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    archs = [a for a in ARCHS if any(r["arch"] == a for r in rows)]
    keys = ["mcc", "recovered", "precision", "recall", "uniqueness"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(keys)
    print("| arch | L0 | FVU | MCC | recovered | precision | recall | uniqueness |\n|---|---|---|---|---|---|---|---|")
    for j, key in enumerate(keys):
        for i, a in enumerate(archs):
            vals = [r[key] for r in rows if r["arch"] == a]
            ax.bar(i + j * width, np.mean(vals), width, color=f"C{j}", label=key if i == 0 else None)
            ax.scatter([i + j * width] * len(vals), vals, color="k", s=6, zorder=3)
    for a in archs:
        sel = [r for r in rows if r["arch"] == a]

        def cell(k: str, sel=sel) -> str:
            return f"{np.mean([r[k] for r in sel]):.3f} ± {np.std([r[k] for r in sel]):.3f}"
        print(f"| {a} | {np.mean([r['l0'] for r in sel]):.2f} | {cell('fvu')} | {cell('mcc')} | {cell('recovered')} | "
              f"{cell('precision')} | {cell('recall')} | {cell('uniqueness')} |")
    ax.set_xticks(np.arange(len(archs)) + 0.4 - width / 2, archs)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (mean; dots: seeds)")
    ax.set_title(f"Synthetic ground truth: {rows[0]['d_sae']} latents for {rows[0]['d_sae']} true features, "
                 f"L0 ~ {rows[0]['data_l0']:.1f}")
    ax.legend(ncol=5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    main()

"""`align rsa --data 'PREFIX/*'` over every (dataset, hook) pair of a zoo against rsatoolbox on the same pairs:
per pair a correlation-distance RDM of the pooled features and the Spearman correlation with each subject's
brain RDM, plus the brain RDMs' noise ceiling (rsatoolbox's boot_noise_ceiling) once per target; the scores are
compared too (largest absolute difference of the per-pair means over subjects).

    python tests/benchmarks/bench_rsa_sweep.py --zoo /work/bench/real/zoo78 \\
        --brain ../shared/data/net2brain78/fmri_EVC_RDMs.npz ../shared/data/net2brain78/fmri_IT_RDMs.npz
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rsatoolbox as rt

import shards
from analysis.align.config import RsaConfig
from analysis.align.inputs import load_brain_rdms
from analysis.align.rsa_run import run as rsa


def reference(zoo: Path, brains: dict[str, np.ndarray]) -> tuple[float, dict, int]:
    """(seconds, {(dataset, hook, target): mean Spearman over subjects}, pairs) with rsatoolbox."""
    t0 = time.perf_counter()
    out = {}
    for rdms in brains.values():
        rt.inference.boot_noise_ceiling(rt.rdm.RDMs(rdms), method="spearman")
    for ds_dir in sorted(p for p in zoo.iterdir() if (p / "manifest.json").exists()):
        ds = shards.open_dataset(str(ds_dir))
        for hook in ds.hooks:
            x = ds.to_numpy(hook).astype(np.float64).reshape(ds.num_rows, -1)
            model = rt.rdm.calc_rdm(rt.data.Dataset(x), method="correlation")
            for target, rdms in brains.items():
                out[(ds_dir.name, hook, target)] = float(rt.rdm.compare(model, rt.rdm.RDMs(rdms), "spearman").mean())
    return time.perf_counter() - t0, out, len({k[:2] for k in out})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--brain", nargs="+", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    brains = {Path(b).stem: load_brain_rdms(b).rdms for b in args.brain}  # the files' arrays, as stacks
    ours_s, ref_s = [], []
    for _ in range(args.rounds):  # alternating, best of each: the first round also pays imports (matplotlib)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            rsa(RsaConfig(data=f"{args.zoo}/*", hooks=["*"], brain=args.brain, noise_ceiling=True, out=tmp))
            ours_s.append(time.perf_counter() - t0)
            t = pq.read_table(Path(tmp, "sweep.parquet")).to_pandas()
        s, ref, pairs = reference(Path(args.zoo), brains)
        ref_s.append(s)
    t = t[t.subject == "all"]
    got = {(r.dataset, r.hook, r.target): r.score for r in t.itertuples()}
    diff = max(abs(got[k] - v) for k, v in ref.items())
    ours, theirs = min(ours_s), min(ref_s)
    print(json.dumps({"pairs": pairs, "targets": len(brains), "actlake_s": round(ours, 2),
                      "rsatoolbox_s": round(theirs, 2), "speedup": round(theirs / ours, 2), "max_abs_diff": diff,
                      "rounds": args.rounds, "first_round_actlake_s": round(ours_s[0], 2),
                      "date": time.strftime("%Y-%m-%d")}))

if __name__ == "__main__":
    main()

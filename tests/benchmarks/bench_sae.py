"""SAE training: loader overhead, and actlake against SAELens on the same activations, measured in one run.

    python tests/benchmarks/bench_sae.py [--examples 4000] [--tokens 400k] [--json out.jsonl]

Activations: all-MiniLM-L6-v2 resid.3 (d=384, float16) over the built-in corpus, extracted first.
SAE: TopK, k=32, 16x expansion (6144 latents), batch 4096, the same token budget for everyone.

1. Loader overhead = actlake steps/s reading shuffled batches from the dataset ÷ actlake steps/s on the
   same batches already in memory (same process, same trainer).
2. SAELens (``SAETrainer`` + ``TopKTrainingSAE``, fed the same in-memory batches through its
   ``data_provider``) against actlake from the dataset: time per step, and FVU / L0 of both final SAEs
   evaluated the same way on the same rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import shards  # noqa: E402
from analysis.sae.config import SaeTrainConfig, parse_count  # noqa: E402
from analysis.sae.runner import SaeRun, _init_b_dec  # noqa: E402


def record(**kw) -> dict:
    kw["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(kw), flush=True)
    return kw


@torch.no_grad()
def fvu_l0(encode, decode, x: torch.Tensor) -> tuple[float, float]:
    z = encode(x)
    recon = decode(z)
    return (float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()),
            float((z != 0).sum(1).float().mean()))


def timed_steps(trainer, batches, steps: int) -> float:
    """Steps/s of ``trainer.step`` over ``batches`` (first 2 steps are warm-up, not timed)."""
    it = iter(batches)
    for _ in range(2):
        batch = next(it)
        batch = batch[0] if isinstance(batch, tuple) else batch
        trainer.step(batch)
        trainer.state.step += 1
    t = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
        batch = batch[0] if isinstance(batch, tuple) else batch
        trainer.step(batch)
        trainer.state.step += 1
    return steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=4000)
    p.add_argument("--tokens", default="400k")
    p.add_argument("--dir", default="bench-data")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    torch.set_num_threads(os.cpu_count() or 2)
    work = Path(args.dir)
    data = str(work / "sae-minilm")
    if not (Path(data) / "manifest.json").exists():
        from ingest.config import ExtractConfig
        from ingest.driver import run_extraction

        run_extraction(ExtractConfig(data=f"builtin:concepts?n={args.examples}", hooks="resid.3", out=data,
                                     unit_size=500))
        import ray

        ray.shutdown()
    ds = shards.open_dataset(data)
    k, expansion, bs = 32, 16, 4096
    tokens = parse_count(args.tokens)
    results = []
    cfg = SaeTrainConfig(data=data, hook="resid.3", arch="topk", k=[k], expansion=[expansion],
                         tokens=str(tokens), batch_size=bs, out=str(work / "sae-actlake"), log_every=10,
                         checkpoint_every=0, overwrite=True)

    # 1. loader overhead: identical fresh trainers doing the identical steps on identical batches, one fed
    #    from memory and one from the dataset (ABBA order, so drift between runs cancels)
    def fresh() -> SaeRun:
        shutil.rmtree(work / "sae-actlake", ignore_errors=True)
        r = SaeRun(cfg)
        _init_b_dec(cfg, r.ds, r.trainer)
        return r

    n_steps = 12
    held = [{"resid.3": b["resid.3"].clone()} for b, _ in itertools.islice(fresh()._batches(), n_steps + 2)]
    rates = {"mem": [], "disk": []}
    for what in ("mem", "disk", "disk", "mem"):
        r = fresh()
        rates[what].append(timed_steps(r.trainer, held if what == "mem" else r._batches(), n_steps))
    mem, disk = (sum(rates[w]) / 2 for w in ("mem", "disk"))
    trainer = r.trainer
    results.append(record(bench="sae-loader-overhead", arch="topk", d_in=384, d_sae=384 * expansion, k=k,
                          batch=bs, steps=n_steps, steps_per_s_in_memory=round(mem, 3),
                          steps_per_s_from_dataset=round(disk, 3), ratio=round(disk / mem, 3)))

    # 2. actlake, end to end from the dataset
    shutil.rmtree(work / "sae-actlake", ignore_errors=True)
    t = time.perf_counter()
    ours = SaeRun(cfg).run().to_json()
    ours_s = time.perf_counter() - t
    from analysis.sae import load_sae

    sae = load_sae(str(work / "sae-actlake"))
    x_eval = ds.take(list(range(0, ds.num_rows, max(1, ds.num_rows // 20000))), hooks=["resid.3"],
                     dtype="float32")["resid.3"]
    f_ours, l0_ours = fvu_l0(sae.encode, sae.decode, x_eval)
    steps = ours["steps"]

    # 3. SAELens on the same activations, same budget, batches fed from memory
    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    it = ds.iter_batches("resid.3", batch_size=bs, shuffle=True, seed=0, drop_last=True, columns=[])
    batches = [b["resid.3"].clone() for b in it]

    def provider():
        while True:
            yield from batches

    sl_sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=384, d_sae=384 * expansion, k=k,
                                                   normalize_activations="expected_average_only_in"))
    tcfg = SAETrainerConfig(total_training_samples=steps * bs, train_batch_size_samples=bs, lr=ours_lr(cfg),
                            lr_end=0.0,
                            lr_warm_up_steps=trainer.schedule.warmup, lr_decay_steps=int(steps * cfg.decay_frac),
                            lr_scheduler_name="constant", device="cpu", n_checkpoints=0,
                            logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=10)
    t = time.perf_counter()
    SAETrainer(tcfg, sl_sae, provider()).fit()
    sl_s = time.perf_counter() - t
    sl_sae.eval()
    f_sl, l0_sl = fvu_l0(lambda x: sl_sae.encode(x), lambda z: sl_sae.decode(z), x_eval)
    results.append(record(bench="sae-vs-saelens", arch="topk", k=k, d_sae=384 * expansion, batch=bs, steps=steps,
                          tokens=steps * bs, actlake_seconds=round(ours_s, 1),
                          actlake_loop_seconds=ours["loop_seconds"],
                          actlake_s_per_step=round(ours["loop_seconds"] / steps, 3), actlake_fvu=round(f_ours, 4),
                          actlake_l0=round(l0_ours, 2), saelens_seconds=round(sl_s, 1),
                          saelens_s_per_step=round(sl_s / steps, 3), saelens_fvu=round(f_sl, 4),
                          saelens_l0=round(l0_sl, 2), speedup_per_step=round(sl_s / ours["loop_seconds"], 3),
                          speedup_end_to_end=round(sl_s / ours_s, 3)))
    # 4. EleutherAI sparsify's SparseCoder (TopK with its sparse decoder; the eager one on CPU), trained with
    #    the same Adam, schedule, AuxK and decoder-norm steps on the same batches from memory
    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError:
        SparseCoder = None
    if SparseCoder is not None:
        from analysis.sae.trainer import lr_factor

        torch.manual_seed(0)
        sp = SparseCoder(384, SparseCoderConfig(expansion_factor=expansion, k=k))
        sp.b_dec.data = batches[0].mean(0)
        opt = torch.optim.Adam(sp.parameters(), lr=ours_lr(cfg))
        since = torch.zeros(sp.num_latents, dtype=torch.long)
        dead_after = min(10_000_000, tokens // 10)
        t = time.perf_counter()
        for step, x in zip(range(steps), provider(), strict=False):
            for g in opt.param_groups:
                g["lr"] = ours_lr(cfg) * lr_factor(step, steps, trainer.schedule.warmup, cfg.decay_frac)
            out = sp(x, dead_mask=since > dead_after)
            (out.fvu + out.auxk_loss / 32).backward()
            sp.remove_gradient_parallel_to_decoder_directions()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sp.set_decoder_norm_to_unit_norm()
            fired = torch.zeros(sp.num_latents, dtype=torch.bool)
            fired[out.latent_indices.flatten()] = True
            since += bs
            since[fired] = 0
        sp_s = time.perf_counter() - t
        with torch.no_grad():
            enc = sp.encode(x_eval)
            recon = sp.decode(enc.top_acts, enc.top_indices)
            f_sp = float((recon - x_eval).pow(2).sum() / (x_eval - x_eval.mean(0)).pow(2).sum())
            l0_sp = float((enc.top_acts != 0).sum(1).float().mean())
        results.append(record(bench="sae-vs-sparsify", arch="topk", k=k, d_sae=384 * expansion, batch=bs,
                              steps=steps, actlake_s_per_step=round(ours["loop_seconds"] / steps, 3),
                              actlake_fvu=round(f_ours, 4), sparsify_s_per_step=round(sp_s / steps, 3),
                              sparsify_fvu=round(f_sp, 4), sparsify_l0=round(l0_sp, 2),
                              speedup_per_step=round(sp_s / ours["loop_seconds"], 3)))
    # 5. actlake with 3x the default learning rate (sparsify's encoder init takes larger effective steps)
    cfg3 = dataclasses.replace(cfg, lr=3 * ours_lr(cfg), out=str(work / "sae-actlake-lr3"))
    ours3 = SaeRun(cfg3).run().to_json()
    sae3 = load_sae(str(work / "sae-actlake-lr3"))
    f3, l03 = fvu_l0(sae3.encode, sae3.decode, x_eval)
    results.append(record(bench="sae-actlake-lr3", arch="topk", k=k, d_sae=384 * expansion, lr=cfg3.lr, steps=steps,
                          actlake_s_per_step=round(ours3["loop_seconds"] / steps, 3), actlake_fvu=round(f3, 4),
                          actlake_l0=round(l03, 2)))
    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


def ours_lr(cfg: SaeTrainConfig) -> float:
    from analysis.sae.trainer import default_lr

    return cfg.lr or default_lr(384 * cfg.expansion[0])


if __name__ == "__main__":
    main()

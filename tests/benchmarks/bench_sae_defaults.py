"""SAE defaults: actlake against EleutherAI sparsify and SAELens, each at its own defaults, on the same rows.

    python tests/benchmarks/bench_sae_defaults.py --data bench-data/sae-minilm --hook resid.3 \
        --tokens 2M --seeds 0 1 2 --trainers actlake sparsify saelens --json docs/results/sae-defaults.jsonl
    python tests/benchmarks/bench_sae_defaults.py ... --ablate    # actlake's old defaults, one factor at a time

All trainers read the same training rows (the dataset's rows at ``position >= --min-position``, minus a
held-out set) from memory, in the same per-seed shuffled order, batch 4096, same k and width. Every
``--eval-every`` steps each SAE is evaluated on the same 8,192 held-out rows in raw units (FVU = squared
error / total variance); that time is left out of the step times. What "defaults" means per trainer:

- actlake: ``SaeTrainer`` with what ``actlake sae train`` does when given only --k and --expansion.
- sparsify 1.3.3: ``SparseCoder`` with ``TrainConfig``'s defaults - Signum (sign of the gradient) under
  schedule-free's wrapper (momentum 0.95), lr 5e-3/sqrt(latents/2^14), b_dec = mean of the first batch, FVU
  loss, no AuxK, decoder at unit norm with parallel gradients removed; the steps of its ``Trainer.fit``
  written out here because that trainer only runs hooked on a live model.
- SAELens 6.54: ``SAETrainer`` + ``TopKTrainingSAE`` with every default except d_in, d_sae and k.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import shards  # noqa: E402
from analysis.sae.config import SaeTrainConfig, parse_count  # noqa: E402
from analysis.sae.runner import build_sae, plan_saes, schedule_of  # noqa: E402
from analysis.sae.trainer import SaeTrainer, geometric_median  # noqa: E402

BATCH = 4096
EVAL_ROWS = 8192
X_TEST: torch.Tensor | None = None  #: with --split examples --eval-on validation: the test rows


def record(path: str | None, **kw) -> dict:
    kw["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(kw), flush=True)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(kw) + "\n")
    return kw


def load_pool(data: str, hook: str, min_position: int, split: str = "rows",
              eval_on: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows) as float32, rows at positions below ``min_position`` left out.

    ``split="examples"``: held out by whole documents, as ``sae train`` holds out: the test set is ``sae train``'s
    own held-out split (5 %, copies of a text together); a validation set of another 5 % of the remaining
    documents (for choosing learning rates) is left out of training too. ``eval_on`` picks which one is returned.
    """
    ds = shards.open_dataset(data)
    got = ds.take(list(range(ds.num_rows)), hooks=[hook], dtype="float32")
    x = got[hook].reshape(ds.num_rows, -1)
    keep = torch.as_tensor(np.asarray(got["position"]) >= min_position)
    if split == "examples":
        from analysis.sae.split import plan_split

        meta = ds.metadata_table(["example_id", "position", "token_id"])
        _, test = plan_split(meta, 0.05, "text")
        ids = meta.column("example_id").to_numpy()
        rest = np.setdiff1d(np.unique(ids), test)
        val = np.random.default_rng(4321).choice(rest, max(1, len(rest) // 20), replace=False)
        train = keep & ~torch.as_tensor(np.isin(ids, np.concatenate([test, val])))
        global X_TEST
        if eval_on == "validation":  # the test documents' FVU is reported at the end too
            X_TEST = x[keep & torch.as_tensor(np.isin(ids, test))].contiguous()
        held = torch.as_tensor(np.isin(ids, test if eval_on == "test" else val))
        return x[train].contiguous(), x[keep & held].contiguous()
    x = x[keep]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    return x[perm[EVAL_ROWS:]].contiguous(), x[perm[:EVAL_ROWS]].contiguous()


def batches(x: torch.Tensor, seed: int) -> Iterator[torch.Tensor]:
    """Shuffled batches of ``BATCH`` rows, a new permutation per epoch, the same for every trainer."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(perm) - BATCH + 1, BATCH):
            yield x[perm[i:i + BATCH]]


@torch.no_grad()
def fvu(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


class Curve:
    """Held-out FVU every ``every`` steps; the time spent evaluating is kept apart from the step time.
    ``fired`` gives the latents that fire on some held-out row (for the final never-fired fraction)."""

    def __init__(self, every: int, x_eval: torch.Tensor, reconstruct: Callable[[torch.Tensor], torch.Tensor],
                 fired: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.every, self.x_eval, self.reconstruct, self.fired = every, x_eval, reconstruct, fired
        self.points: list[tuple[int, float]] = []
        self.eval_s = 0.0
        self.test_fvu: float | None = None

    def never_fired(self) -> float | None:
        with torch.no_grad():
            return None if self.fired is None else float(1 - self.fired(self.x_eval).float().mean())

    def maybe(self, step: int, last: bool = False) -> None:
        if step % self.every and not last:
            return
        t = time.perf_counter()
        self.points.append((step * BATCH, fvu(self.reconstruct(self.x_eval), self.x_eval)))
        if last and X_TEST is not None:  # --eval-on validation: the test documents' FVU at the end too
            self.test_fvu = fvu(self.reconstruct(X_TEST), X_TEST)
        self.eval_s += time.perf_counter() - t


# --- actlake ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Variant:
    """actlake's trainer with some settings changed (the ablation's one factor)."""

    name: str
    cfg: dict = dataclasses.field(default_factory=dict)  #: SaeTrainConfig fields
    options: dict = dataclasses.field(default_factory=dict)  #: architecture options
    signum: bool = False  #: sparsify's optimizer instead of Adam


def run_actlake(args, x: torch.Tensor, x_eval: torch.Tensor, seed: int, variant: Variant) -> dict:
    base = dict(data=args.data, hook=[args.hook], arch=["topk"], k=[args.k], expansion=[args.expansion],
                tokens=str(args.token_count), batch_size=BATCH, seed=seed, checkpoint_every=0)
    if args.split == "examples":  # --lr-scale multiplies a fixed reference: the default before issue 29, 1e-3 at
        # 2^14 latents (the default itself moved to 2x on this benchmark's validation documents)
        base["lr"] = 1e-3 / math.sqrt(x.shape[1] * args.expansion / 2**14) * args.lr_scale
    base.update(variant.cfg)
    opts = base.pop("options", {})
    cfg = SaeTrainConfig(**base)
    for key, val in {**opts, **variant.options}.items():
        setattr(cfg.options, key, val)
    ds = shards.open_dataset(args.data)
    spec = plan_saes(cfg, ds)[0]
    sae = build_sae(cfg, spec)
    # input scale as `sae train` computes it, from the training rows themselves (the stored mean norm may
    # include rows this benchmark leaves out)
    scale = math.sqrt(x.shape[1]) / float(x[:65536].norm(dim=1).mean()) if cfg.normalize else 1.0
    schedule = schedule_of(cfg)
    trainer = SaeTrainer([spec], {spec.name: sae}, {args.hook: scale}, schedule)
    if variant.signum:
        trainer.opt = signum_optimizer(sae.parameters(), spec.d_sae)
    with torch.no_grad():
        if cfg.b_dec_init == "geometric_median":
            sample = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:4096]]
            sae.b_dec.copy_(geometric_median(sample * scale))
        elif cfg.b_dec_init == "mean":
            sae.b_dec.copy_(x[:65536].mean(0) * scale)

    def reconstruct(xe: torch.Tensor) -> torch.Tensor:
        sae.eval()
        with torch.no_grad():
            out = sae(xe * scale).recon / scale
        sae.train()
        return out

    def fired(xe: torch.Tensor) -> torch.Tensor:
        sae.eval()
        out = (sae.encode(xe * scale) != 0).any(0)
        sae.train()
        return out

    curve, it, loop = Curve(args.eval_every, x_eval, reconstruct, fired), batches(x, seed), 0.0
    sae.train()
    for step in range(schedule.steps):
        b = next(it)
        t = time.perf_counter()
        row = trainer.step({args.hook: b})
        trainer.state.step += 1
        loop += time.perf_counter() - t
        curve.maybe(step + 1, step + 1 == schedule.steps)
    if variant.signum:
        trainer.opt.eval()
        curve.points[-1] = (curve.points[-1][0], fvu(reconstruct(x_eval), x_eval))
    return {"steps": schedule.steps, "s_per_step": loop / schedule.steps, "fvu": curve.points[-1][1],
            "fvu_test": curve.test_fvu,
            "dead_frac": row[spec.name]["dead_frac"], "never_fired": curve.never_fired(), "curve": curve.points,
            "lr": spec.lr}


def signum_optimizer(params, d_sae: int, scale: float = 1.0):
    """sparsify's default optimizer: SignSGD under schedule-free's wrapper, lr 5e-3 / sqrt(d_sae / 2^14)."""
    from schedulefree import ScheduleFreeWrapper
    from sparsify.sign_sgd import SignSGD

    opt = ScheduleFreeWrapper(SignSGD([{"params": list(params), "lr": scale * 5e-3 / math.sqrt(d_sae / 2**14)}]),
                              momentum=0.95)
    opt.train()
    for g in opt.param_groups:  # SaeTrainer scales "lr" from "base_lr" each step; schedule-free takes none
        g["base_lr"] = g["lr"]
    return opt


# --- sparsify at its defaults ---------------------------------------------------------------------------
def run_sparsify(args, x: torch.Tensor, x_eval: torch.Tensor, seed: int) -> dict:
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(seed)
    sp = SparseCoder(x.shape[1], SparseCoderConfig(expansion_factor=args.expansion, k=args.k))
    opt = signum_optimizer(sp.parameters(), sp.num_latents, args.lr_scale)
    steps = math.ceil(args.token_count / BATCH)

    def reconstruct(xe: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            enc = sp.encode(xe)
            return sp.decode(enc.top_acts, enc.top_indices)

    def fired(xe: torch.Tensor) -> torch.Tensor:
        enc = sp.encode(xe)
        out = torch.zeros(sp.num_latents, dtype=torch.bool)
        out[enc.top_indices[enc.top_acts > 0]] = True
        return out

    curve, it, loop = Curve(args.eval_every, x_eval, reconstruct, fired), batches(x, seed), 0.0
    for step in range(steps):
        b = next(it)
        t = time.perf_counter()
        if step == 0:
            sp.b_dec.data = b.mean(0)  # Trainer.fit: b_dec = the first batch's mean
        sp.set_decoder_norm_to_unit_norm()  # Trainer.fit does this before each forward
        out = sp(b, dead_mask=None)  # auxk_alpha defaults to 0: no dead mask, no AuxK
        out.fvu.backward()
        sp.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        loop += time.perf_counter() - t
        if step + 1 == steps or (step + 1) % args.eval_every == 0:
            opt.eval()  # schedule-free evaluates at its averaged weights
            curve.maybe(step + 1, step + 1 == steps)
            opt.train()
    opt.eval()
    return {"steps": steps, "s_per_step": loop / steps, "fvu": curve.points[-1][1], "fvu_test": curve.test_fvu,
            "never_fired": curve.never_fired(), "curve": curve.points}


# --- SAELens at its defaults ----------------------------------------------------------------------------
def run_saelens(args, x: torch.Tensor, x_eval: torch.Tensor, seed: int) -> dict:
    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(seed)
    d = x.shape[1]
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=d * args.expansion, k=args.k))
    steps = math.ceil(args.token_count / BATCH)

    def reconstruct(xe: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sae.decode(sae.encode(xe))

    curve = Curve(args.eval_every, x_eval, reconstruct, lambda xe: (sae.encode(xe) != 0).any(0))
    state = {"n": 0, "t": 0.0}

    def provider():
        # called by SAETrainer.fit before each step: the clock between two calls is one step
        for b in batches(x, seed):
            if state["n"]:
                state["t"] += time.perf_counter() - state["t0"]
                curve.maybe(state["n"])
            state["n"] += 1
            state["t0"] = time.perf_counter()
            yield b

    # lr_end: the runner config sets lr / 10 in its post-init; SAETrainerConfig leaves it to the caller
    tcfg = SAETrainerConfig(total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, device="cpu",
                            lr=3e-4 * args.lr_scale, lr_end=3e-4 * args.lr_scale / 10,
                            logger=LoggingConfig(log_to_wandb=False))
    SAETrainer(tcfg, sae, provider()).fit()
    state["t"] += time.perf_counter() - state["t0"]
    curve.maybe(steps, last=True)
    return {"steps": steps, "s_per_step": state["t"] / steps, "fvu": curve.points[-1][1], "fvu_test": curve.test_fvu,
            "never_fired": curve.never_fired(), "curve": curve.points}


OLD = {"lr": -1.0, "encoder_init_norm": 1.0, "options": {"auxk_coeff": 1 / 32}}  # before issue 14
ABLATION = [  # actlake's defaults before issue 14, then one factor changed at a time; "lr": -m is m x the
    # sparsify Adam rule 2e-4/sqrt(d_sae/2^14) (the old default; the new default is m = 5)
    Variant("old-defaults", OLD),
    Variant("enc-init-0.58", {**OLD, "encoder_init_norm": 0.58}),
    Variant("lr-x3", {**OLD, "lr": -3.0}),
    Variant("no-auxk", {**OLD, "options": {"auxk_coeff": 0.0}}),
    Variant("no-warmup-decay", {**OLD, "warmup_steps": 0, "decay_frac": 0.0}),
    Variant("b-dec-mean", {**OLD, "b_dec_init": "mean"}),
    Variant("no-normalize", {**OLD, "normalize": False}),
    Variant("signum", OLD, signum=True),
    # combinations of the factors that helped
    Variant("lr-x3+enc-0.58", {**OLD, "lr": -3.0, "encoder_init_norm": 0.58}),
    Variant("lr-x5+enc-0.58", {**OLD, "lr": -5.0, "encoder_init_norm": 0.58}),  # = the new defaults
    Variant("lr-x3+enc-0.58+no-warmup-decay", {**OLD, "lr": -3.0, "encoder_init_norm": 0.58, "warmup_steps": 0,
                                               "decay_frac": 0.0}),
    Variant("lr-x5", {**OLD, "lr": -5.0}),
    Variant("new-defaults", {}),  # (before the AuxK default changed to 0, this name was run with AuxK 1/32)
    Variant("new-defaults-auxk", {"options": {"auxk_coeff": 1 / 32}}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="bench-data/sae-minilm")
    p.add_argument("--hook", default="resid.3")
    p.add_argument("--min-position", type=int, default=0, help="leave out rows at earlier positions")
    p.add_argument("--tokens", default="2M")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--trainers", nargs="+", default=["actlake", "sparsify", "saelens"])
    p.add_argument("--ablate", action="store_true", help="run the ablation variants instead of --trainers")
    p.add_argument("--only", nargs="*", default=None, help="ablation variants to run (default: all)")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--lr-scale", type=float, default=1.0, help="each trainer's default learning rate times this")
    p.add_argument("--split", choices=["rows", "examples"], default="rows",
                   help="hold out random rows (the old benchmark) or whole documents (sae train's split)")
    p.add_argument("--eval-on", choices=["test", "validation"], default="test",
                   help="with --split examples: score on the test documents or on the validation documents")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="draw FVU vs tokens from --json into this PNG and stop")
    args = p.parse_args()
    if args.plot:
        plot(args.json, args.plot)
        return
    args.token_count = parse_count(args.tokens)
    torch.set_num_threads(os.cpu_count() or 2)
    x, x_eval = load_pool(args.data, args.hook, args.min_position, args.split, args.eval_on)
    common = dict(data=args.data, hook=args.hook, min_position=args.min_position, tokens=args.token_count,
                  lr_scale=args.lr_scale, split=args.split, eval_on=args.eval_on, eval_rows=len(x_eval),
                  k=args.k, expansion=args.expansion, d_in=x.shape[1], train_rows=len(x), batch=BATCH)
    for seed in args.seeds:
        if args.ablate:
            for v in ABLATION:
                if args.only and v.name not in args.only:
                    continue
                if v.cfg.get("lr", 0) < 0:  # a multiple of sparsify's Adam rule
                    rule = 2e-4 / math.sqrt(x.shape[1] * args.expansion / 2**14)
                    v = dataclasses.replace(v, cfg={**v.cfg, "lr": -v.cfg["lr"] * rule})
                out = run_actlake(args, x, x_eval, seed, v)
                record(args.json, bench="sae-ablation", variant=v.name, seed=seed, **common, **out)
            continue
        for name in args.trainers:
            run = {"actlake": lambda s: run_actlake(args, x, x_eval, s, Variant("defaults")),
                   "sparsify": lambda s: run_sparsify(args, x, x_eval, s),
                   "saelens": lambda s: run_saelens(args, x, x_eval, s)}[name]
            out = run(seed)
            record(args.json, bench="sae-defaults", trainer=name, seed=seed, **common, **out)


def plot(jsonl: str, png: str) -> None:
    """Held-out FVU vs training tokens, one panel per dataset/hook, one colour per trainer (a line per
    seed), and a table of the final values (mean ± sd over seeds) printed as markdown."""
    import collections

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(jsonl) if '"sae-defaults"' in line]
    panels = sorted({(r["data"], r["hook"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2), squeeze=False)
    colours = {"actlake": "C0", "sparsify": "C1", "saelens": "C2"}
    table = collections.defaultdict(list)
    for ax, (data, hook) in zip(axes[0], panels, strict=True):
        for r in rows:
            if (r["data"], r["hook"]) != (data, hook):
                continue
            tok, f = zip(*r["curve"], strict=True)
            first = not any(line.get_label() == r["trainer"] for line in ax.get_lines())
            ax.plot(np.asarray(tok) / 1e6, f, color=colours.get(r["trainer"]), alpha=0.8,
                    label=r["trainer"] if first else "_")
            table[(Path(data).name, hook, r["trainer"])].append((r["fvu"], r["s_per_step"]))
        ax.set_yscale("log")
        ax.set_xlabel("training tokens (millions)")
        ax.set_ylabel("held-out FVU")
        ax.set_title(f"{Path(data).name} {hook}: TopK k=32, x8, batch 4096")
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print("| data | hook | trainer | seeds | final FVU (mean ± sd) | s/step (mean) |\n|---|---|---|---|---|---|")
    for (data, hook, trainer), vals in sorted(table.items()):
        f, t = np.asarray(vals).T
        print(f"| {data} | {hook} | {trainer} | {len(f)} | {f.mean():.4f} ± {f.std():.4f} | {t.mean():.3f} |")


if __name__ == "__main__":
    main()

"""SAE training on activation datasets: one pass over shuffled batches trains every requested SAE;
checkpoints hold model, optimiser, step and the reader's cursor, so a killed run resumes exactly.

The same loop runs in one process (``world_size=1``) or in each Ray Train worker, where every worker
reads its own rank's share of the shuffled data and gradients are averaged with ``all_reduce``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.sae.base import SparseAutoencoder
from analysis.sae.config import SaeTrainConfig, parse_count, parse_list
from analysis.sae.registry import SaeConfigError, arch_class, create_sae
from shards.errors import ActlakeError
from shards.storage import Storage

log = logging.getLogger("actlake.sae")

CHECKPOINTS = "checkpoints"
# Fields that make a run: resuming with any of them changed would not continue the same run.
_RUN_IDENTITY = ("data", "hook", "arch", "k", "expansion", "tokens", "batch_size", "lr", "warmup_steps",
                 "decay_frac", "l1_coeff", "l0_coeff", "bandwidth", "threshold_init", "prefixes", "auxk_coeff",
                 "k_aux", "dead_tokens", "b_dec_init", "normalize", "seed", "workers")


class SaeRunError(ActlakeError, ValueError):
    """The output already holds a different run, or the run is misconfigured."""


@dataclass
class SaeSpec:
    """One SAE of the run: which hook it reads and its shape."""

    name: str
    hook: str
    arch: str
    k: int | None
    expansion: int
    d_in: int
    d_sae: int
    lr: float


@dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    cursor: dict | None = None
    tokens: int = 0
    metrics: list = field(default_factory=list)


def default_lr(d_sae: int) -> float:
    """sparsify's rule: 2e-4 at 2^14 latents, scaled by 1/sqrt(d_sae / 2^14)."""
    return 2e-4 / math.sqrt(d_sae / 2**14)


def run_fingerprint(cfg: SaeTrainConfig) -> str:
    d = {k: getattr(cfg, k) for k in _RUN_IDENTITY}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_saes(cfg: SaeTrainConfig, ds) -> list[SaeSpec]:
    """Every (hook, arch, k, expansion) combination, checked against the dataset."""
    hooks = parse_list(cfg.hook)
    missing = [h for h in hooks if h not in ds.hooks]
    if missing:
        import difflib

        close = {h: difflib.get_close_matches(h, ds.hooks, n=3, cutoff=0.4) for h in missing}
        raise SaeConfigError(f"hook(s) {missing} not in dataset {ds.storage.display()} (nearest: {close}); "
                             f"it has {ds.hooks}")
    specs = []
    for hook in hooks:
        d_in = int(np.prod(ds.hook_spec(hook).shape))
        for arch in parse_list(cfg.arch):
            cls = arch_class(arch)
            for expansion in parse_list(cfg.expansion, int):
                for k in parse_list(cfg.k, int):
                    d_sae = d_in * expansion
                    if k > d_sae and cls.k_sparse:
                        raise SaeConfigError(f"k={k} is larger than the SAE's width d_sae={d_sae} "
                                             f"({expansion} x {d_in}); lower --k or raise --expansion")
                    name = (f"{hook}-{cls.arch}-k{k}-x{expansion}" if cls.k_sparse
                            else f"{hook}-{cls.arch}-x{expansion}")
                    spec = SaeSpec(name, hook, cls.arch, k, expansion, d_in, d_sae, cfg.lr or default_lr(d_sae))
                    if all(s.name != spec.name for s in specs):
                        specs.append(spec)
    return specs


def check_output(cfg: SaeTrainConfig, out: Storage, fingerprint: str, clear: bool = True) -> str:
    """What ``out`` holds for this run: "new", "resume" (a checkpoint of it) or "done" (finished).

    Another run's output is refused naming the changed settings, or with ``--overwrite`` removed
    (only where ``clear``: in a data-parallel run the driver clears once, before any worker starts).
    """
    try:
        existing = json.loads(out.get_bytes("run.json"))
    except FileNotFoundError:
        return "new"
    if existing.get("fingerprint") != fingerprint:
        if cfg.overwrite and clear:
            out.delete_prefix("")
            return "new"
        old = existing.get("config", {})
        diffs = [f"{k}: {old.get(k)!r} -> {getattr(cfg, k)!r}" for k in _RUN_IDENTITY
                 if k in old and old.get(k) != getattr(cfg, k)]
        raise SaeRunError(f"{out.display()} already holds a different run ({'; '.join(diffs) or 'other'}). "
                          "Use the same settings to resume it, --overwrite to replace it, or another --out.")
    if out.exists("training_summary.json"):
        return "done"
    return "resume" if out.exists(f"{CHECKPOINTS}/latest.json") else "new"


def build_sae(cfg: SaeTrainConfig, spec: SaeSpec) -> SparseAutoencoder:
    options = {"l1_coeff": cfg.l1_coeff, "l0_coeff": cfg.l0_coeff, "bandwidth": cfg.bandwidth,
               "threshold_init": cfg.threshold_init}
    if spec.arch == "matryoshka" and cfg.prefixes:
        options["prefixes"] = list(cfg.prefixes)
    return create_sae(spec.arch, spec.d_in, spec.d_sae, spec.k, seed=cfg.seed, **options)


def geometric_median(x: torch.Tensor, iters: int = 100, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld's algorithm (as SAELens and sparsify initialise b_dec)."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() < 1e-6 * y.norm().clamp_min(1e-12):
            return y_new
        y = y_new
    return y


def lr_factor(step: int, steps: int, warmup: int, decay_frac: float) -> float:
    f = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    decay_start = int(steps * (1 - decay_frac))
    if decay_frac > 0 and step >= decay_start:
        f *= max(0.0, (steps - step) / max(steps - decay_start, 1))
    return f


class Trainer:
    """Trains the SAEs of one run on rank ``rank`` of ``world_size`` (1: a single process)."""

    def __init__(self, cfg: SaeTrainConfig, rank: int = 0, world_size: int = 1) -> None:
        import shards

        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.so = cfg.storage_options()
        self.ds = shards.open_dataset(cfg.data, self.so)
        self.specs = plan_saes(cfg, self.ds)
        self.hooks = sorted({s.hook for s in self.specs})
        if cfg.batch_size <= 0 or cfg.batch_size % world_size:
            raise SaeRunError(f"--batch-size {cfg.batch_size} must be positive and divisible by --workers "
                              f"{world_size}")
        self.local_bs = cfg.batch_size // world_size
        self.total_tokens = parse_count(cfg.tokens)
        self.steps = max(1, math.ceil(self.total_tokens / cfg.batch_size))
        self.warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else min(1000, max(1, self.steps // 20))
        self.dead_tokens = (min(10_000_000, max(self.total_tokens // 10, cfg.batch_size))
                            if cfg.dead_tokens == "auto" else parse_count(cfg.dead_tokens))
        self.scales = {h: self._scale(h) for h in self.hooks}
        self.saes = {s.name: build_sae(cfg, s) for s in self.specs}
        params = [{"params": list(self.saes[s.name].parameters()), "lr": s.lr, "base_lr": s.lr}
                  for s in self.specs]
        self.opt = torch.optim.Adam(params, betas=(0.9, 0.999))
        self.since_fired = {s.name: torch.zeros(s.d_sae, dtype=torch.long) for s in self.specs}
        self.state = RunState()
        self.out = Storage(cfg.out, self.so)
        self.fingerprint = run_fingerprint(cfg)

    # --- set-up --------------------------------------------------------------------------
    def _scale(self, hook: str) -> float:
        if not self.cfg.normalize:
            return 1.0
        st = self.ds.stats(hook)
        d = int(np.prod(self.ds.hook_spec(hook).shape))
        if st is None or not st.mean_norm:
            raise SaeRunError(f"hook {hook!r} has no stored statistics to normalise with; use --no-normalize")
        return math.sqrt(d) / float(st.mean_norm)  # inputs at mean norm sqrt(d), as SAELens and Anthropic do

    def _init_b_dec(self) -> None:
        mode = self.cfg.b_dec_init
        if mode not in ("geometric_median", "mean", "zeros"):
            raise SaeRunError(f"--b-dec-init {mode!r}: use geometric_median, mean or zeros")
        if mode == "zeros":
            return
        sample = None
        if mode == "geometric_median":  # a fixed sample (seed-determined), the same on every rank
            it = self.ds.iter_batches(self.hooks, batch_size=min(4096, self.ds.num_rows), shuffle=True,
                                      seed=self.cfg.seed + 1_000_003, columns=[], reuse_buffers=False)
            gen = iter(it)
            sample = next(gen)
            gen.close()  # stops the prefetch thread
        for spec in self.specs:
            sae = self.saes[spec.name]
            scale = self.scales[spec.hook]
            if mode == "mean":
                value = torch.as_tensor(self.ds.stats(spec.hook).mean, dtype=torch.float32).reshape(-1) * scale
            else:
                value = geometric_median(sample[spec.hook].reshape(len(sample[spec.hook]), -1).float() * scale)
            with torch.no_grad():
                sae.b_dec.copy_(value)

    # --- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        from safetensors.torch import save

        step = self.state.step
        rel = f"{CHECKPOINTS}/step-{step:08d}"
        opt_sd = self.opt.state_dict()
        tensors = {f"opt.{pid}.{key}": val for pid, st in opt_sd["state"].items() for key, val in st.items()}
        for name, sae in self.saes.items():
            tensors.update({f"sae.{name}.{k}": v.detach().clone() for k, v in sae.state_dict().items()})
            tensors[f"fired.{name}"] = self.since_fired[name]
        self.out.put_bytes(f"{rel}/state.safetensors", save({k: v.contiguous() for k, v in tensors.items()}))
        meta = {"step": step, "epoch": self.state.epoch, "cursor": self.state.cursor, "tokens": self.state.tokens,
                "param_groups": opt_sd["param_groups"], "metrics": self.state.metrics,
                "fingerprint": self.fingerprint}
        self.out.put_bytes(f"{rel}/state.json", json.dumps(meta).encode())
        # the pointer is written last: a run killed mid-checkpoint resumes from the previous one
        self.out.put_bytes(f"{CHECKPOINTS}/latest.json", json.dumps({"step": step, "path": rel}).encode())
        for old in self.out.fs.ls(self.out.path(CHECKPOINTS), detail=False):
            name = old.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("step-") and name != f"step-{step:08d}":
                self.out.delete_prefix(f"{CHECKPOINTS}/{name}")

    def load_checkpoint(self) -> None:
        from safetensors.torch import load

        latest = json.loads(self.out.get_bytes(f"{CHECKPOINTS}/latest.json"))
        meta = json.loads(self.out.get_bytes(f"{latest['path']}/state.json"))
        tensors = load(self.out.get_bytes(f"{latest['path']}/state.safetensors"))
        for name, sae in self.saes.items():
            prefix = f"sae.{name}."
            sae.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            self.since_fired[name] = tensors[f"fired.{name}"].clone()
        state: dict = {}
        for key, val in tensors.items():
            if key.startswith("opt."):
                _, pid, field_name = key.split(".", 2)
                state.setdefault(int(pid), {})[field_name] = val
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.state = RunState(meta["step"], meta["epoch"], meta["cursor"], meta["tokens"], meta["metrics"])
        log.info("resumed %s at step %d (epoch %d)", self.out.display(), self.state.step, self.state.epoch)

    # --- the loop ------------------------------------------------------------------------
    def _batches(self):
        """Shuffled batches from the saved cursor on, epoch after epoch."""
        while True:
            it = self.ds.iter_batches(self.hooks, batch_size=self.local_bs, shuffle=True, seed=self.cfg.seed,
                                      epoch=self.state.epoch, rank=self.rank, world_size=self.world,
                                      drop_last=True, start=self.state.cursor, columns=[])
            got = False
            gen = iter(it)
            try:
                for batch in gen:
                    got = True
                    yield batch, it.cursor
            finally:
                gen.close()
            if not got and self.state.cursor is None:
                raise SaeRunError(f"dataset {self.ds.storage.display()} has fewer rows ({self.ds.num_rows}) than "
                                  f"one batch per worker ({self.local_bs}); lower --batch-size")
            self.state.epoch += 1
            self.state.cursor = None

    def _all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.world == 1:
            return t
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t

    def step(self, batch: dict) -> dict:
        """One optimiser step of every SAE on ``batch``; returns the step's metrics."""
        cfg = self.cfg
        f = lr_factor(self.state.step, self.steps, self.warmup, cfg.decay_frac)
        for group in self.opt.param_groups:
            group["lr"] = group["base_lr"] * f
        stats = {}
        for spec in self.specs:
            sae = self.saes[spec.name]
            x = batch[spec.hook].reshape(self.local_bs, -1).float() * self.scales[spec.hook]
            out = sae(x)
            err = (out.recon - x).pow(2).sum(-1)
            mse = err.mean()
            loss = mse + out.sparsity_loss
            if out.extra_recon_loss is not None:
                loss = loss + out.extra_recon_loss
            dead = self.since_fired[spec.name] >= self.dead_tokens
            aux = x.new_zeros(())
            if sae.k_sparse and cfg.auxk_coeff > 0 and bool(dead.any()):
                aux = sae.auxk_loss(x, out, dead, cfg.k_aux or spec.d_in // 2)
                loss = loss + cfg.auxk_coeff * aux
            loss.backward()
            with torch.no_grad():
                n_active, fired = out.active_counts()
                fired = fired.to(torch.int32)
                sums = torch.stack([err.detach().sum(), (x - x.mean(0)).pow(2).sum(), n_active.float(),
                                    aux.detach(), out.sparsity_loss.detach()])
            stats[spec.name] = (sums, fired)
        for sae in self.saes.values():
            for p in sae.parameters():
                if p.grad is not None:
                    self._all_reduce(p.grad).div_(self.world)
            sae.remove_parallel_grads()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        row = {"step": self.state.step + 1, "tokens": (self.state.step + 1) * cfg.batch_size, "lr_factor": f}
        for spec in self.specs:
            self.saes[spec.name].normalize_decoder()
            sums, fired = stats[spec.name]
            sums = self._all_reduce(sums)
            fired = self._all_reduce(fired, "max").bool()
            since = self.since_fired[spec.name]
            since += cfg.batch_size
            since[fired] = 0
            row[spec.name] = {"mse": float(sums[0]) / cfg.batch_size, "fvu": float(sums[0] / sums[1]),
                              "l0": float(sums[2]) / cfg.batch_size, "auxk": float(sums[3]) / self.world,
                              "dead_frac": float((since >= self.dead_tokens).float().mean())}
        return row

    def train(self) -> dict:
        """Run (or resume) to the token budget; returns the summary (rank 0 writes the outputs)."""
        t0 = time.perf_counter()
        found = check_output(self.cfg, self.out, self.fingerprint, clear=self.world == 1)
        if found == "done":  # rerunning a finished command changes nothing
            log.info("%s already holds this finished run", self.out.display())
            return json.loads(self.out.get_bytes("training_summary.json")) if self.rank == 0 else {}
        if found == "resume":
            self.load_checkpoint()
        else:
            self._init_b_dec()
            if self.rank == 0:
                cfg_json = dataclasses.asdict(self.cfg)
                cfg_json.pop("endpoint_url", None)
                self.out.put_bytes("run.json", json.dumps({"fingerprint": self.fingerprint, "config": cfg_json,
                                                          "dataset": self.ds.manifest.get("id")}).encode())
        for sae in self.saes.values():
            sae.train()
        progress = _Progress(self.steps, self.state.step, self.rank == 0)
        t_loop = time.perf_counter()
        self.start_step = self.state.step
        window: list[dict] = []
        batches = self._batches()
        while self.state.step < self.steps:
            batch, cursor = next(batches)
            row = self.step(batch)
            self.state.step += 1
            self.state.cursor = cursor
            self.state.tokens += self.cfg.batch_size
            window.append(row)
            last = self.state.step == self.steps
            if self.state.step % max(1, self.cfg.log_every) == 0 or last:
                summary = _average(window, [s.name for s in self.specs])
                self.state.metrics.append(summary)
                window = []
                if self.rank == 0:
                    log.info("step %d/%d %s", self.state.step, self.steps,
                             " ".join(f"{n}: fvu {m['fvu']:.4f} l0 {m['l0']:.1f} dead {m['dead_frac']:.3f}"
                                      for n, m in summary.items() if isinstance(m, dict)))
            progress.update(row)
            if (self.rank == 0 and self.cfg.checkpoint_every > 0 and not last
                    and self.state.step % self.cfg.checkpoint_every == 0):
                self.save_checkpoint()
        progress.close()
        batches.close()
        self.loop_seconds = time.perf_counter() - t_loop
        result = self.finish(time.perf_counter() - t0) if self.rank == 0 else {}
        return result

    # --- the end -------------------------------------------------------------------------
    def finish(self, seconds: float) -> dict:
        from analysis.sae.io import save_sae
        from analysis.sae.report import evaluate, write_report

        single = len(self.specs) == 1
        results = {}
        for spec in self.specs:
            sae = self.saes[spec.name]
            sae.eval()
            folded = _folded_copy(sae, self.scales[spec.hook])
            ev = evaluate(folded, self.ds, spec.hook, parse_count(self.cfg.eval_tokens), self.cfg.seed)
            rel = "" if single else spec.name
            dest = self.out.child(rel) if rel else self.out
            extra = {"hook": spec.hook, "dataset": self.cfg.data, "dataset_id": self.ds.manifest.get("id"),
                     "input_scale_folded": self.scales[spec.hook], "tokens": self.state.tokens,
                     "steps": self.state.step, "lr": spec.lr, "seed": self.cfg.seed, "eval": ev["summary"]}
            save_sae(folded, dest.uri, extra, self.so)
            write_report(dest, spec.name, self.state.metrics, ev)
            results[spec.name] = {"uri": dest.display(), **ev["summary"]}
        ran = self.state.step - self.start_step
        summary = {"out": self.out.display(), "steps": self.state.step, "tokens": self.state.tokens,
                   "seconds": round(seconds, 2), "loop_seconds": round(self.loop_seconds, 2),
                   "steps_per_s": round(ran / max(self.loop_seconds, 1e-9), 3), "saes": results}
        self.out.put_bytes("training_summary.json", json.dumps(summary, indent=1).encode())
        log.info("done: %s", json.dumps(summary))
        return summary


def _folded_copy(sae: SparseAutoencoder, scale: float) -> SparseAutoencoder:
    import copy

    folded = copy.deepcopy(sae)
    folded.fold_input_scale(scale)
    return folded.eval()


def _average(rows: list[dict], names: list[str]) -> dict:
    out = {"step": rows[-1]["step"], "tokens": rows[-1]["tokens"], "lr_factor": rows[-1]["lr_factor"]}
    for n in names:
        out[n] = {k: float(np.mean([r[n][k] for r in rows])) for k in rows[-1][n]}
    return out


class _Progress:
    """A tqdm bar (steps/s, ETA) on a terminal, a log line every 30 s otherwise."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        import sys

        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=done, unit="step", desc="sae", disable=not (enabled and
                                                                                         sys.stderr.isatty()))

    def update(self, row: dict) -> None:
        self.bar.update(1)
        first = next((v for v in row.values() if isinstance(v, dict)), None)
        if first:
            self.bar.set_postfix_str(f"fvu {first['fvu']:.3f} l0 {first['l0']:.1f}")

    def close(self) -> None:
        self.bar.close()


def train_sae(cfg: SaeTrainConfig) -> dict:
    """Train (or resume) the SAEs of ``cfg``; with ``workers > 1`` on Ray Train.

    Example::

        train_sae(SaeTrainConfig(data="demo-data/minilm", hook="resid.3", arch="topk", k="32",
                                 expansion="16", tokens="1M", out="runs/minilm-topk"))
    """
    import os

    if cfg.workers > 1:
        from analysis.sae.distributed import train_distributed

        return train_distributed(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    try:
        return Trainer(cfg).train()
    finally:
        torch.set_num_threads(threads)  # a caller's process keeps its own setting

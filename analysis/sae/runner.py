"""One rank of an SAE training run: the dataset, the run directory, checkpoints and results around the loop
(``analysis.sae.trainer.SaeTrainer``, which does no I/O). The same code runs in one process or in each Ray
Train worker, where every worker reads its own rank's share of the shuffled data."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.common.finite import require_finite
from analysis.common.results import Results
from analysis.common.rundir import RunDir, RunRecord, fingerprint_of, run_settings
from analysis.common.runstart import pin_dataset
from analysis.common.stream import sample_rows
from analysis.sae.base import SparseAutoencoder
from analysis.sae.checkpoints import LATEST, load_checkpoint, save_checkpoint
from analysis.sae.config import RUN_NEUTRAL, SaeTrainConfig, parse_count
from analysis.sae.io import save_residual_directions, save_sae
from analysis.sae.registry import SaeConfigError, get_architecture
from analysis.sae.report import evaluate, write_report
from analysis.sae.trainer import SaeSpec, SaeTrainer, Schedule, TrainerCallbacks, default_lr, geometric_median
from shards.errors import ActlakeError
from shards.progress import Progress
from shards.reader import Dataset, open_dataset
from shards.records import JsonRecord

log = logging.getLogger("actlake.sae")
SUMMARY = "training_summary.json"


class SaeRunError(ActlakeError, ValueError):
    """The run cannot go ahead as configured (too little data, no statistics to normalise with)."""


@dataclass(kw_only=True)
class TrainSummary(JsonRecord):
    """What a finished run wrote (also ``training_summary.json``)."""

    out: str
    steps: int
    tokens: int
    seconds: float
    loop_seconds: float
    steps_per_s: float
    saes: dict[str, dict] = field(default_factory=dict)  #: name -> {"uri", and the SaeEval numbers}


def _require_variance(ds: Dataset, hooks: list[str]) -> None:
    """A hook whose every row is the same has nothing to learn (and its FVU, variance explained over zero
    variance, is undefined)."""
    flat = [h for h in hooks if h in ds.manifest.stats and not float(np.max(ds.stats(h).var, initial=0.0)) > 0]
    if flat:
        raise SaeConfigError(f"hook(s) {flat} of {ds.storage.display()} are constant (zero variance in every "
                             "dimension): an SAE has nothing to learn from them; choose other hooks")


def plan_saes(cfg: SaeTrainConfig, ds: Dataset) -> list[SaeSpec]:
    """Every (hook, arch, expansion, k) combination, checked against the dataset."""
    if cfg.min_position:  # pooled rows and images have position -1: nothing would be left to train on
        import pyarrow.compute as pc

        top = pc.max(ds.metadata_table(["position"]).column("position")).as_py()
        if top is None or top < cfg.min_position:
            raise SaeConfigError(f"--min-position {cfg.min_position} leaves no row of {ds.storage.display()} "
                                 f"(its highest position is {top}); lower it, or use 0 for pooled or image rows")
    missing = [h for h in cfg.hook if h not in ds.hooks]
    if missing:
        import difflib

        close = {h: difflib.get_close_matches(h, ds.hooks, n=3, cutoff=0.4) for h in missing}
        raise SaeConfigError(f"hook(s) {missing} not in dataset {ds.storage.display()} (nearest: {close}); "
                             f"it has {ds.hooks}")
    require_finite(ds, list(cfg.hook), "sae train")
    _require_variance(ds, list(cfg.hook))
    specs: dict[str, SaeSpec] = {}
    for hook in cfg.hook:
        d_in = ds.hook_spec(hook).numel
        for arch in map(get_architecture, cfg.arch):
            for expansion in cfg.expansion:
                for k in cfg.k if arch.k_sparse else cfg.k[:1]:
                    d_sae = d_in * expansion
                    if arch.k_sparse and k > d_sae:
                        raise SaeConfigError(f"k={k} is larger than the SAE's width d_sae={d_sae} "
                                             f"({expansion} x {d_in}); lower --k or raise --expansion")
                    name = f"{hook}-{arch.name}" + (f"-k{k}" if arch.k_sparse else "") + f"-x{expansion}"
                    specs.setdefault(name, SaeSpec(name=name, hook=hook, arch=arch.name, k=k, expansion=expansion,
                                                   d_in=d_in, d_sae=d_sae, lr=cfg.lr or default_lr(d_sae)))
    return list(specs.values())


def build_sae(cfg: SaeTrainConfig, spec: SaeSpec) -> SparseAutoencoder:
    arch = get_architecture(spec.arch)
    sae = arch.sae_class(spec.d_in, spec.d_sae, spec.k, cfg.seed, arch.options_from(cfg.options))
    with torch.no_grad():
        sae.W_enc.mul_(cfg.encoder_init_norm)
    return sae


def kept_sample(ds: Dataset, hooks: list[str], n: int, seed: int, min_position: int) -> dict[str, torch.Tensor]:
    """A seeded sample of (up to) ``n`` rows at positions >= ``min_position``, the same rows for each hook."""
    if not min_position:
        return sample_rows(ds, hooks, n, seed)
    it = ds.iter_batches(hooks, batch_size=max(1, min(2 * n, ds.num_rows)), shuffle=True, seed=seed,
                         columns=["position"], reuse_buffers=False)
    gen = iter(it)
    try:
        batch = next(gen)
    finally:
        gen.close()
    keep = torch.nonzero(batch["position"] >= min_position).squeeze(1)[:n]
    if not len(keep):
        raise SaeRunError(f"no row of {ds.storage.display()} is at position >= {min_position}; lower --min-position")
    return {h: batch[h].reshape(len(batch[h]), -1)[keep] for h in hooks}


def input_scale(ds: Dataset, hook: str, normalize: bool, min_position: int = 0) -> float:
    """Inputs go to mean norm sqrt(d), as SAELens and Anthropic do (1 without ``normalize``); measured on the
    kept rows when some positions are left out (the stored statistics cover every row)."""
    if not normalize:
        return 1.0
    if min_position:
        sample = kept_sample(ds, [hook], 65536, 1_000_033, min_position)[hook].float()
        return math.sqrt(ds.hook_spec(hook).numel) / float(sample.norm(dim=1).mean())
    st = ds.stats(hook)
    if not st.mean_norm:
        raise SaeRunError(f"hook {hook!r} has no stored statistics to normalise with; use --no-normalize")
    return math.sqrt(ds.hook_spec(hook).numel) / float(st.mean_norm)


def schedule_of(cfg: SaeTrainConfig) -> Schedule:
    tokens = cfg.token_count
    steps = max(1, math.ceil(tokens / cfg.batch_size))
    warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else min(1000, max(1, steps // 20))
    dead = (min(10_000_000, max(tokens // 10, cfg.batch_size)) if cfg.dead_tokens == "auto"
            else parse_count(cfg.dead_tokens))
    return Schedule(steps=steps, batch_size=cfg.batch_size, warmup=warmup, decay_frac=cfg.decay_frac, dead_tokens=dead,
                    log_every=cfg.log_every or auto_log_every(steps), checkpoint_every=cfg.checkpoint_every)


def auto_log_every(steps: int, points: int = 100) -> int:
    """About ``points`` logged points over the run: a short run logs every step, so its curves have shape."""
    return max(1, steps // points)


def _init_b_dec(cfg: SaeTrainConfig, ds: Dataset, trainer: SaeTrainer) -> None:
    if cfg.b_dec_init == "zeros":
        return
    hooks = sorted({s.hook for s in trainer.specs})
    # a fixed sample (seed-determined), the same on every rank
    # (the stored mean covers every row: with --min-position the mean comes from a sample of kept rows too)
    sample = (kept_sample(ds, hooks, 4096, cfg.seed + 1_000_003, cfg.min_position)
              if cfg.b_dec_init == "geometric_median" or cfg.min_position else None)
    for spec in trainer.specs:
        if not trainer.saes[spec.name].uses_b_dec:
            continue
        scale = trainer.scales[spec.hook]
        if sample is None:
            value = torch.as_tensor(ds.stats(spec.hook).mean, dtype=torch.float32).reshape(-1) * scale
        else:
            rows = sample[spec.hook].float() * scale
            value = geometric_median(rows) if cfg.b_dec_init == "geometric_median" else rows.mean(0)
        with torch.no_grad():
            trainer.saes[spec.name].b_dec.copy_(value)


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def pin_sae_data(cfg: SaeTrainConfig, rundir: RunDir) -> tuple[Dataset, dict]:
    """The dataset at ``--data-version``, or at the version an unfinished run planned on, or its latest; with the
    run's settings (the version read among them)."""
    ds, _hooks, settings = pin_dataset(
        lambda v: (open_dataset(cfg.data, cfg.storage, v), []), cfg.data_version, rundir,
        lambda ds, _: run_settings(cfg, RUN_NEUTRAL, dataset_id=ds.dataset_id, dataset_version=ds.version))
    return ds, settings


class SaeRun:
    """One rank's share of a run: the dataset, the trainer, the run directory and checkpoints."""

    def __init__(self, cfg: SaeTrainConfig, rank: int = 0, world: int = 1) -> None:
        self.cfg, self.rank, self.world = cfg, rank, world
        self.out = Results(cfg.out, cfg.storage)
        self.rundir = RunDir(self.out.storage, SUMMARY, resume_marker=LATEST, command="sae train")
        self.ds, self.settings = pin_sae_data(cfg, self.rundir)
        self.specs = plan_saes(cfg, self.ds)
        scales = {h: input_scale(self.ds, h, cfg.normalize, cfg.min_position)
                  for h in sorted({s.hook for s in self.specs})}
        self.trainer = SaeTrainer(self.specs, {s.name: build_sae(cfg, s) for s in self.specs}, scales,
                                  schedule_of(cfg), world, _all_reduce if world > 1 else None)

    def _batches(self):
        """Shuffled batches from the saved cursor on, epoch after epoch, each with the cursor after it."""
        st = self.trainer.state
        while True:
            it = self.ds.iter_batches(sorted(self.trainer.scales), batch_size=self.trainer.local_bs, shuffle=True,
                                      seed=self.cfg.seed, epoch=st.epoch, rank=self.rank, world_size=self.world,
                                      drop_last=True, start=st.cursor,
                                      columns=["position"] if self.cfg.min_position else [])
            got = False
            gen = iter(it)
            try:
                for batch in gen:
                    got = True
                    if self.cfg.min_position:  # rows left out: the batch shrinks (the trainer counts its rows)
                        keep = torch.nonzero(batch.pop("position") >= self.cfg.min_position).squeeze(1)
                        batch = {h: v[keep] for h, v in batch.items()}
                    yield batch, it.cursor
            finally:
                gen.close()
            if not got and st.cursor is None:
                raise SaeRunError(f"dataset {self.ds.storage.display()} has fewer rows ({self.ds.num_rows}) than "
                                  f"one batch per worker ({self.trainer.local_bs}); lower --batch-size")
            st.epoch += 1
            st.cursor = None

    def _checkpoint(self) -> None:
        save_checkpoint(self.out.storage, self.trainer.state.step, self.trainer.state_tensors(),
                        {**self.trainer.state_meta(), "fingerprint": fingerprint_of(self.settings)})

    def _start(self, found: str) -> None:
        if found == "resume":
            self.trainer.load_state(*load_checkpoint(self.out.storage))
            log.info("resumed %s at step %d (epoch %d)", self.out.display(), self.trainer.state.step,
                     self.trainer.state.epoch)
            return
        _init_b_dec(self.cfg, self.ds, self.trainer)
        if self.rank == 0:
            ref = self.ds.manifest.ref(self.ds.storage.display(), self.cfg.hook)
            self.rundir.start(RunRecord(fingerprint=fingerprint_of(self.settings), settings=self.settings,
                                        config=dataclasses.asdict(self.cfg), dataset=ref,
                                        seeds={"seed": self.cfg.seed}))

    def run(self) -> TrainSummary | None:
        """Train (or resume) to the token budget; rank 0 writes and returns the summary."""
        t0 = time.perf_counter()
        found = self.rundir.state(self.settings, self.cfg.overwrite, clear=self.world == 1)
        if found == "done":  # rerunning a finished command changes nothing
            log.info("%s already holds this finished run", self.out.display())
            return TrainSummary.from_json(self.rundir.summary()) if self.rank == 0 else None
        self._start(found)
        trainer, lead = self.trainer, self.rank == 0
        start_step = trainer.state.step
        with Progress(trainer.schedule.steps, "step", "sae", log, initial=start_step, every=30, enabled=lead) as prog:
            callbacks = TrainerCallbacks(
                on_step=lambda row: prog.update(1, note=_brief(row)),
                on_log=(lambda m: log.info("step %d/%d %s", m["step"], trainer.schedule.steps, _brief(m))) if lead
                else None,
                on_checkpoint=self._checkpoint if lead else None)
            t_loop = time.perf_counter()
            batches = self._batches()
            trainer.fit(batches, callbacks)
            batches.close()
            loop = time.perf_counter() - t_loop
        if not lead:
            return None
        return self._finish(time.perf_counter() - t0, loop, trainer.state.step - start_step)

    def _finish(self, seconds: float, loop: float, ran: int) -> TrainSummary:
        """Evaluate, fold the input scale into each SAE, save it with its report; then the summary."""
        st, results = self.trainer.state, {}
        for spec in self.specs:
            folded = copy.deepcopy(self.trainer.saes[spec.name])
            folded.fold_input_scale(self.trainer.scales[spec.hook])
            folded.eval()
            ev, freq = evaluate(folded, self.ds, spec.hook, parse_count(self.cfg.eval_tokens), self.cfg.seed,
                                min_position=self.cfg.min_position)
            dest = self.out.child("" if len(self.specs) == 1 else spec.name)
            save_sae(folded, dest.storage.uri, {
                "hook": spec.hook, "dataset": self.ds.storage.display(), "dataset_id": self.ds.dataset_id,
                "dataset_version": self.ds.version, "input_scale_folded": self.trainer.scales[spec.hook],
                "tokens": st.tokens, "steps": st.step, "lr": spec.lr, "seed": self.cfg.seed, "eval": ev.to_json(),
                "min_position": self.cfg.min_position},
                self.cfg.storage)
            write_report(dest, spec.name, st.metrics, ev, freq)
            save_residual_directions(folded, self.ds, spec.hook, dest.storage.uri, self.cfg.storage)
            results[spec.name] = {"uri": dest.display(), **ev.to_json()}
        summary = TrainSummary(out=self.out.display(), steps=st.step, tokens=st.tokens, seconds=round(seconds, 2),
                               loop_seconds=round(loop, 2), steps_per_s=round(ran / max(loop, 1e-9), 3), saes=results)
        self.rundir.finish(summary.to_json())
        log.info("done: %s", json.dumps(summary.to_json()))
        return summary


def _brief(row: dict) -> str:
    return " ".join(f"{n}: fvu {m['fvu']:.4f} l0 {m['l0']:.1f} dead {m['dead_frac']:.3f}"
                    for n, m in row.items() if isinstance(m, dict))


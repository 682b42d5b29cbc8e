"""One rank of an SAE training run: the dataset, the run directory, checkpoints and results around the loop
(``analysis.sae.trainer.SaeTrainer``, which does no I/O). The same code runs in one process or in each Ray
Train worker, where every worker reads its own rank's share of the shuffled data."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.common.finite import require_finite
from analysis.common.inputs import DatasetInput, RunSummary
from analysis.common.rundir import fingerprint_of
from analysis.common.runstart import RunKind, StartedRun, open_run
from analysis.common.stream import sample_rows
from analysis.sae.base import SparseAutoencoder
from analysis.sae.checkpoints import LATEST, load_checkpoint, save_checkpoint
from analysis.sae.config import RUN_NEUTRAL, SaeTrainConfig, parse_count
from analysis.sae.evals.core import core_metrics
from analysis.sae.io import TrainedOn, save_residual_directions, save_sae
from analysis.sae.paired import PREFIX, PairedDataset
from analysis.sae.registry import SaeConfigError, get_architecture
from analysis.sae.report import write_report
from analysis.sae.split import EvalSplit, heldout_rows, plan_split
from analysis.sae.trainer import (
    SaeSpec,
    SaeTrainer,
    Schedule,
    TrainerCallbacks,
    TrainingDivergedError,
    default_lr,
    geometric_median,
)
from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID
from shards.errors import ActlakeError
from shards.progress import Progress
from shards.reader import Dataset
from shards.records import JsonRecord

log = logging.getLogger("actlake.sae")
SUMMARY = "training_summary.json"


class SaeRunError(ActlakeError, ValueError):
    """The run cannot go ahead as configured (too little data, no statistics to normalise with)."""


@dataclass(kw_only=True)
class TrainSummary(RunSummary, JsonRecord):
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

        top = pc.max(ds.metadata_table([POSITION]).column(POSITION)).as_py()
        if top is None or top < cfg.min_position:
            raise SaeConfigError(f"--min-position {cfg.min_position} leaves no row of {ds.storage.display()} "
                                 f"(its highest position is {top}); lower it, or use 0 for pooled or image rows")
    wanted = list(dict.fromkeys([*cfg.hook, *cfg.target_hook]))
    missing = [h for h in wanted if h not in ds.hooks]
    if missing:
        import difflib

        close = {h: difflib.get_close_matches(h, ds.hooks, n=3, cutoff=0.4) for h in missing}
        raise SaeConfigError(f"hook(s) {missing} not in dataset {ds.storage.display()} (nearest: {close}); "
                             f"it has {ds.hooks}")
    require_finite(ds, wanted, "sae train", "--hook, --target-hook")
    _require_variance(ds, wanted)
    specs: dict[str, SaeSpec] = {}
    for ins, outs in _dictionaries(cfg):
        d_in = sum(ds.hook_spec(h).numel for h in ins)
        d_out = sum(ds.hook_spec(h).numel for h in outs)
        label = "+".join(ins) + ("" if outs == ins else "-to-" + "+".join(outs))
        for arch in map(get_architecture, cfg.arch):
            for expansion in cfg.expansion:
                for k in cfg.k if arch.k_sparse else cfg.k[:1]:
                    d_sae = d_in * expansion
                    if arch.k_sparse and k > d_sae:
                        raise SaeConfigError(f"k={k} is larger than the SAE's width d_sae={d_sae} "
                                             f"({expansion} x {d_in}); lower --k or raise --expansion")
                    name = f"{label}-{arch.name}" + (f"-k{k}" if arch.k_sparse else "") + f"-x{expansion}"
                    specs.setdefault(name, SaeSpec(name=name, hook=label, arch=arch.name, k=k, expansion=expansion,
                                                   d_in=d_in, d_sae=d_sae, lr=cfg.lr or default_lr(d_sae),
                                                   in_hooks=ins, out_hooks=outs, d_out=d_out,
                                                   skip=cfg.skip_connection))
    return list(specs.values())


def _dictionaries(cfg: SaeTrainConfig) -> list[tuple[list[str], list[str]]]:
    """(hooks read, hooks reconstructed) of each dictionary: one SAE per hook, one transcoder per (hook,
    target) pair, or one crosscoder over every hook."""
    if cfg.crosscoder:
        hooks = list(cfg.hook) + ([PREFIX + h for h in cfg.hook] if cfg.crosscoder_data else [])
        return [(hooks, hooks)]
    if cfg.target_hook:
        targets = cfg.target_hook * len(cfg.hook) if len(cfg.target_hook) == 1 else cfg.target_hook
        return [([h], [t]) for h, t in zip(cfg.hook, targets, strict=True)]
    return [([h], [h]) for h in cfg.hook]


def build_sae(cfg: SaeTrainConfig, spec: SaeSpec) -> SparseAutoencoder:
    arch = get_architecture(spec.arch)
    sae = arch.sae_class(spec.d_in, spec.d_sae, spec.k, cfg.seed, arch.options_from(cfg.options))
    if spec.transcoder:
        sae.make_transcoder(spec.d_out, spec.skip, cfg.seed)
    with torch.no_grad():
        sae.W_enc.mul_(cfg.encoder_init_norm)
    return sae


def kept_sample(ds: Dataset, hooks: list[str], n: int, seed: int, min_position: int) -> dict[str, torch.Tensor]:
    """A seeded sample of (up to) ``n`` rows at positions >= ``min_position``, the same rows for each hook."""
    if not min_position:
        return sample_rows(ds, hooks, n, seed)
    it = ds.iter_batches(hooks, batch_size=max(1, min(2 * n, ds.num_rows)), shuffle=True, seed=seed,
                         columns=[POSITION], reuse_buffers=False)
    gen = iter(it)
    try:
        batch = next(gen)
    finally:
        gen.close()
    keep = torch.nonzero(batch[POSITION] >= min_position).squeeze(1)[:n]
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
    hooks = sorted({h for s in trainer.specs for h in s.out_hooks})
    # a fixed sample (seed-determined), the same on every rank
    # (the stored mean covers every row: with --min-position the mean comes from a sample of kept rows too)
    sample = (kept_sample(ds, hooks, 4096, cfg.seed + 1_000_003, cfg.min_position)
              if cfg.b_dec_init == "geometric_median" or cfg.min_position else None)
    for spec in trainer.specs:
        if not trainer.saes[spec.name].uses_b_dec:
            continue
        if sample is None:
            value = trainer.scaled({h: torch.as_tensor(ds.stats(h).mean, dtype=torch.float32).reshape(1, -1)
                                    for h in spec.out_hooks}, spec.out_hooks)[0]
        else:
            rows = trainer.scaled(sample, spec.out_hooks)
            value = geometric_median(rows) if cfg.b_dec_init == "geometric_median" else rows.mean(0)
        with torch.no_grad():
            trainer.saes[spec.name].b_dec.copy_(value)


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


#: ``sae train``'s run: resumable from its latest checkpoint; the lock is the output's, held by ``train.run``
KIND = RunKind("sae train", RUN_NEUTRAL, lock="SAE output", summary=SUMMARY, resume_marker=LATEST)


def start_training(cfg: SaeTrainConfig, clear: bool = True) -> StartedRun:
    """The run's inputs pinned (``--data``, ``--crosscoder-data``) and what ``--out`` holds for it; a data-parallel
    worker (``clear=False``) gets the versions its driver pinned in ``cfg``."""
    run = open_run(cfg, KIND, clear=clear)
    run.hooks = list(cfg.hook)  # recorded with the dataset (the settings hold them as --hook)
    return run


SPLIT_FILE = "eval_split.json"
HELDOUT_FILE = "heldout_examples.parquet"


def plan_eval_split(cfg: SaeTrainConfig, ds: Dataset, warn: bool = True) -> tuple[EvalSplit, np.ndarray, object]:
    """The held-out examples of ``--eval-fraction`` (record, sorted ids) and the metadata they came from.
    Refused when nothing would be held out or nothing left to train on; a corpus that repeats texts is named."""
    meta = ds.metadata_table([EXAMPLE_ID, POSITION, TOKEN_ID])
    split, held = plan_split(meta, cfg.eval_fraction, cfg.eval_group)
    if cfg.eval_fraction and not split.heldout_examples:
        raise SaeConfigError(f"--eval-fraction {cfg.eval_fraction} holds out none of the {split.examples} examples of "
                             f"{ds.storage.display()}; raise it, or use --eval-fraction 0 to evaluate on training rows")
    if not split.train_rows:
        raise SaeConfigError(f"--eval-fraction {cfg.eval_fraction} leaves no training row; lower it")
    if warn and split.repeated:
        where = ("copies of a text are held out or trained on together (--eval-group text)" if split.group == "text"
                 else "copies of held-out texts are trained on; --eval-group text keeps copies together")
        log.warning("the corpus repeats texts: %d examples hold %d distinct texts; %s", split.examples,
                    split.distinct_texts, where)
    if warn and not cfg.eval_fraction:
        log.warning("--eval-fraction 0: eval.json reports on rows the SAE was trained on")
    return split, held, meta


def eval_batches(ds: Dataset, rows: np.ndarray, spec: SaeSpec, batch_size: int = 4096):
    """(inputs, targets) of ``rows`` (global indices) in raw units, ``batch_size`` rows at a time; one tensor
    when the dictionary reconstructs its input."""
    def cat(batch: dict, hooks: list[str]) -> torch.Tensor:
        parts = [batch[h].reshape(len(batch[h]), -1).float() for h in hooks]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    for i in range(0, len(rows), batch_size):
        batch = ds.take(rows[i:i + batch_size], hooks=spec.hooks, columns=[], dtype="float32")
        x = cat(batch, spec.in_hooks)
        yield (x, cat(batch, spec.out_hooks)) if spec.transcoder else x


def hook_scale(scales: dict[str, float], hooks: list[str], ds: Dataset) -> float | torch.Tensor:
    """The input scale of a dictionary reading ``hooks``: one number, or one per dimension for several hooks."""
    if len(hooks) == 1:
        return scales[hooks[0]]
    return torch.cat([torch.full((ds.hook_spec(h).numel,), scales[h]) for h in hooks])


class SaeRun:
    """One rank's share of a run: the dataset, the trainer, the run directory and checkpoints."""

    def __init__(self, cfg: SaeTrainConfig, rank: int = 0, world: int = 1, run: StartedRun | None = None) -> None:
        self.cfg, self.rank, self.world = cfg, rank, world
        self.started = run if run is not None else start_training(cfg, clear=world == 1)
        self.out, self.rundir, self.settings = self.started.out, self.started.rundir, self.started.settings
        self.ds = self.started.ds
        other = self.started.inputs.get("crosscoder_data")
        if other is not None:  # model diffing: the second model's rows beside the first's
            self.ds = PairedDataset(self.ds, other, list(cfg.hook))
        self.specs = plan_saes(cfg, self.ds)
        self.split, held, self.meta = plan_eval_split(cfg, self.ds, warn=rank == 0)
        self.heldout = torch.from_numpy(held) if cfg.eval_fraction else None
        scales = {h: input_scale(self.ds, h, cfg.normalize, cfg.min_position)
                  for h in sorted({h for s in self.specs for h in s.hooks})}
        self.trainer = SaeTrainer(self.specs, {s.name: build_sae(cfg, s) for s in self.specs}, scales,
                                  schedule_of(cfg), world, _all_reduce if world > 1 else None)

    def _batches(self):
        """Shuffled batches from the saved cursor on, epoch after epoch, each with the cursor after it."""
        st = self.trainer.state
        columns = ([POSITION] if self.cfg.min_position else []) + ([EXAMPLE_ID] if self.heldout is not None else [])
        while True:
            it = self.ds.iter_batches(sorted(self.trainer.scales), batch_size=self.trainer.local_bs, shuffle=True,
                                      seed=self.cfg.seed, epoch=st.epoch, rank=self.rank, world_size=self.world,
                                      drop_last=True, start=st.cursor, columns=columns)
            got = False
            gen = iter(it)
            try:
                for batch in gen:
                    got = True
                    if columns:  # rows left out: the batch shrinks (the trainer counts its rows)
                        yield self._kept(batch), it.cursor
                    else:
                        yield batch, it.cursor
            finally:
                gen.close()
            if not got and st.cursor is None:
                raise SaeRunError(f"dataset {self.ds.storage.display()} has fewer rows ({self.ds.num_rows}) than "
                                  f"one batch per worker ({self.trainer.local_bs}); lower --batch-size")
            st.epoch += 1
            st.cursor = None

    def _kept(self, batch: dict) -> dict:
        """The batch without rows below --min-position and without held-out examples' rows."""
        keep = torch.ones(len(next(iter(batch.values()))), dtype=torch.bool)
        if POSITION in batch:
            keep &= batch.pop(POSITION) >= self.cfg.min_position
        if EXAMPLE_ID in batch:
            keep &= ~torch.isin(batch.pop(EXAMPLE_ID), self.heldout)
        idx = torch.nonzero(keep).squeeze(1)
        return {h: v[idx] for h, v in batch.items()}

    def eval_rows(self) -> np.ndarray:
        """Rows of the final evaluation: the held-out examples' (or, with --eval-fraction 0, any) rows at
        positions >= --min-position, a seeded sample of at most --eval-tokens of them in row order."""
        held = self.heldout.numpy() if self.heldout is not None else self.meta.column(EXAMPLE_ID).to_numpy()
        rows = heldout_rows(self.meta, held, self.cfg.min_position)
        cap = parse_count(self.cfg.eval_tokens)
        if len(rows) > cap:
            rows = np.sort(np.random.default_rng(self.cfg.seed + 7_919).choice(rows, cap, replace=False))
        return rows

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
            self.started.begin(self.cfg, {"seed": self.cfg.seed})

    def run(self) -> TrainSummary | None:
        """Train (or resume) to the token budget; rank 0 writes and returns the summary."""
        t0 = time.perf_counter()
        found = self.started.state
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
        rows = self.eval_rows()
        self.out.json(SPLIT_FILE, self.split.to_json())
        if self.heldout is not None:
            self.out.table(HELDOUT_FILE, {EXAMPLE_ID: self.heldout.numpy()})
        scales, folds = self.trainer.scales, {}
        for spec in self.specs:  # every SAE folded and checked before any is saved: a run saves all or none
            folded = copy.deepcopy(self.trainer.saes[spec.name])
            folded.fold_input_scale(hook_scale(scales, spec.in_hooks, self.ds),
                                    hook_scale(scales, spec.out_hooks, self.ds))
            folded.eval()
            bad = [n for n, p in folded.named_parameters() if not bool(torch.isfinite(p).all())]
            if bad:
                raise TrainingDivergedError(
                    f"sae train: SAE {spec.name}'s weights {bad} are not finite once the input scale is folded in "
                    f"(scales {[scales[h] for h in spec.hooks]}); nothing was saved as this run's result. Lower "
                    "--lr, or train with --no-normalize, and rerun with --overwrite.")
            folds[spec.name] = folded
        for spec in self.specs:
            folded = folds[spec.name]
            ev, freq = core_metrics(folded, eval_batches(self.ds, rows, spec), {**self.split.to_json(),
                                                                               "evaluated_rows": len(rows)})
            dest = self.out.child("" if len(self.specs) == 1 else spec.name)
            record = _trained_on(self.started, spec, self.cfg, self.split)
            save_sae(folded, dest.storage.uri, {
                **record.to_cfg(), "hook_module": _hook_module(self.ds, record.hook),
                "input_scale_folded": {h: scales[h] for h in spec.hooks},
                "tokens": st.tokens, "steps": st.step, "lr": spec.lr, "seed": self.cfg.seed, "eval": ev.to_json()},
                self.cfg.storage)
            write_report(dest, spec.name, st.metrics, ev, freq)
            if not spec.transcoder and len(spec.in_hooks) == 1:
                save_residual_directions(folded, self.ds, spec.hook, dest.storage.uri, self.cfg.storage)
            results[spec.name] = {"uri": dest.display(), **ev.to_json()}
        summary = TrainSummary(**self.started.recorded(), out=self.out.display(), steps=st.step, tokens=st.tokens,
                               seconds=round(seconds, 2), loop_seconds=round(loop, 2),
                               steps_per_s=round(ran / max(loop, 1e-9), 3), saes=results)
        self.rundir.finish(summary.to_json())
        log.info("done in %.0f s: %s", seconds, "; ".join(
            f"{k}: held-out FVU {v.get('fvu', float('nan')):.4f}, L0 {v.get('l0', float('nan')):.1f}"
            for k, v in results.items()))
        return summary


def _trained_on(run: StartedRun, spec: SaeSpec, cfg: SaeTrainConfig, split: EvalSplit) -> TrainedOn:
    """What the SAE of ``spec`` records of its training data (``TrainedOn``, its cfg.json): every tool reading it
    defaults to these versions of these datasets."""
    data, other = run.ds, run.inputs.get("crosscoder_data")
    return TrainedOn(
        data=DatasetInput(data.storage.display(), data.version), dataset_id=data.dataset_id,
        # a transcoder's hook: the one it reads (what encode and dashboards feed it); a crosscoder's: its label
        hook=spec.in_hooks[0] if len(spec.in_hooks) == 1 else spec.hook, in_hooks=tuple(spec.in_hooks),
        out_hooks=tuple(spec.out_hooks),
        kind="transcoder" if spec.transcoder else "crosscoder" if len(spec.in_hooks) > 1 else "sae",
        crosscoder=DatasetInput(other.storage.display(), other.version) if other is not None else None,
        crosscoder_id=other.dataset_id if other is not None else None, min_position=cfg.min_position,
        # the model whose activations it read: splicing it into another model is refused
        model=data.manifest.model, eval_split=split.to_json())


def _hook_module(ds, hook: str | None) -> str | None:
    """The model module the hook reads, as the dataset's schema records it (cfg.json's SAELens ``hook_name``
    where the hook has no TransformerLens name); None for a crosscoder's label or a dataset that does not say."""
    return ds.hook_spec(hook).module if hook in ds.hooks else None


def _brief(row: dict) -> str:
    return " ".join(f"{n}: fvu {m['fvu']:.4f} l0 {m['l0']:.1f} dead {m['dead_frac']:.3f}"
                    for n, m in row.items() if isinstance(m, dict))


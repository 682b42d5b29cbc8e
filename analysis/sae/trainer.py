"""The SAE training loop: every SAE of a run takes a step on each batch. It receives its batches and
callbacks and does no I/O (as SAELens' ``SAETrainer``); ``analysis.sae.train`` feeds it from a dataset and
saves what it reports.

In a data-parallel run each rank runs this loop on its own share of the data; ``reduce`` averages
gradients and metrics across ranks (``torch.distributed.all_reduce``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.sae.base import SparseAutoencoder
from shards.batches import Cursor
from shards.errors import ActlakeError


class TrainingDivergedError(ActlakeError, ArithmeticError):
    """An SAE's loss or weights stopped being finite during training (a learning rate far too high, most often);
    the run stops there, saving nothing as its result."""


@dataclass(kw_only=True)
class SaeSpec:
    """One SAE of the run: which hook it reads, its shape, its learning rate."""

    name: str
    hook: str
    arch: str
    k: int | None
    expansion: int
    d_in: int
    d_sae: int
    lr: float
    in_hooks: list[str] = field(default_factory=list)  #: read and concatenated (several: a crosscoder); [hook]
    out_hooks: list[str] = field(default_factory=list)  #: what it reconstructs (other hooks: a transcoder)
    d_out: int = 0  #: width of the output (default d_in)
    skip: bool = False  #: a transcoder's linear skip connection

    def __post_init__(self) -> None:
        self.in_hooks = list(self.in_hooks or [self.hook])
        self.out_hooks = list(self.out_hooks or self.in_hooks)
        self.d_out = self.d_out or self.d_in

    @property
    def transcoder(self) -> bool:
        return self.out_hooks != self.in_hooks

    @property
    def hooks(self) -> list[str]:
        """Every hook it reads (inputs, then targets)."""
        return list(dict.fromkeys([*self.in_hooks, *self.out_hooks]))


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    cursor: Cursor | None = None  #: where the reader stands after the last step
    tokens: int = 0
    metrics: list = field(default_factory=list)  #: averaged metrics, one entry per log interval


@dataclass
class TrainerCallbacks:
    """What the loop reports: each step's metrics, averaged metrics every ``log_every`` steps, and
    checkpoints every ``checkpoint_every`` steps (never at the last step: the caller saves the result)."""

    on_step: Callable[[dict], None] | None = None
    on_log: Callable[[dict], None] | None = None
    on_checkpoint: Callable[[], None] | None = None


def default_lr(d_sae: int) -> float:
    """2e-3 at 2^14 latents, scaled by 1/sqrt(d_sae / 2^14): 10x sparsify's Adam rule (2e-4 at 2^14). Chosen on
    validation documents of builtin:prose that neither trained nor scored the SAEs (docs/benchmarks.md, issue 29:
    1x, 2x and 4x the former 1e-3 gave FVU 0.1241, 0.1168 and 0.1168; 2x kept 3 % of latents silent, 4x 10 %)."""
    return 2e-3 / math.sqrt(d_sae / 2**14)


def lr_factor(step: int, steps: int, warmup: int, decay_frac: float) -> float:
    f = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    decay_start = int(steps * (1 - decay_frac))
    if decay_frac > 0 and step >= decay_start:
        f *= max(0.0, (steps - step) / max(steps - decay_start, 1))
    return f


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


#: metrics computed from the loss (not terms of it): their non-finite values follow from the loss's, or from a
#: degenerate batch (fvu of a constant batch), and are not checked on their own
_DERIVED = frozenset({"fvu", "explained_variance", "l0", "dead_frac", "cossim", "l2_ratio"})


def _average(rows: list[dict], names: list[str]) -> dict:
    out = {"step": rows[-1]["step"], "tokens": rows[-1]["tokens"], "lr_factor": rows[-1]["lr_factor"]}
    for n in names:
        out[n] = {k: float(np.mean([r[n].get(k, 0.0) for r in rows])) for k in rows[-1][n]}
    return out


def _no_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    return t


@dataclass(kw_only=True)
class Schedule:
    """How long and how fast: steps, warm-up, decay, when a latent counts as dead, reporting intervals."""

    steps: int
    batch_size: int  #: global rows per step
    warmup: int
    decay_frac: float
    dead_tokens: int
    log_every: int = 100
    checkpoint_every: int = 0


class SaeTrainer:
    """Trains the SAEs of one run (on one rank of ``world``). Inputs are multiplied by ``scales[hook]``."""

    def __init__(self, specs: list[SaeSpec], saes: dict[str, SparseAutoencoder], scales: dict[str, float],
                 schedule: Schedule, world: int = 1,
                 reduce: Callable[[torch.Tensor, str], torch.Tensor] | None = None) -> None:
        self.specs, self.saes, self.scales, self.schedule = specs, saes, scales, schedule
        self.world, self.reduce = world, reduce or _no_reduce
        self.local_bs = schedule.batch_size // world
        params = [{"params": list(saes[s.name].parameters()), "lr": s.lr, "base_lr": s.lr} for s in specs]
        self.opt = torch.optim.Adam(params, betas=(0.9, 0.999))
        self.since_fired = {s.name: torch.zeros(s.d_sae, dtype=torch.long) for s in specs}
        self.state = TrainState()

    def scaled(self, batch: dict, hooks: list[str]) -> torch.Tensor:
        """The hooks' rows, each flattened and scaled, side by side (one hook: no copy beyond the scaling)."""
        parts = [batch[h].reshape(len(batch[h]), -1).float() * self.scales[h] for h in hooks]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def inputs(self, batch: dict, spec: SaeSpec) -> torch.Tensor:
        return self.scaled(batch, spec.in_hooks)

    def _losses(self, spec: SaeSpec, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Backward of one SAE's loss on inputs ``x`` and targets ``y`` (``x`` itself for an SAE); (summed
        metrics, fired latents, the loss terms)."""
        sae = self.saes[spec.name]
        out = sae.reconstruct(x)
        if y is not x:
            out.target = y
        err = (out.recon - y).pow(2).sum(-1)
        terms = sae.loss_terms(x, out, self.since_fired[spec.name] >= self.schedule.dead_tokens)
        loss = err.mean()
        for t in terms.values():
            loss = loss + t
        loss.backward()
        with torch.no_grad():
            n_active, fired = out.active_counts()
            r = out.recon.detach()
            ny, nr = y.norm(dim=1), r.norm(dim=1)
            cos = ((y * r).sum(1) / (ny * nr).clamp_min(1e-30)).sum()
            sums = torch.stack([err.detach().sum(), (y - y.mean(0)).pow(2).sum(), n_active.float(),
                                torch.tensor(float(len(x))), cos, (nr / ny.clamp_min(1e-30)).sum(),
                                *(t.detach() for t in terms.values())])
        return sums, fired.to(torch.int32), terms

    def step(self, batch: dict) -> dict:
        """One optimiser step of every SAE on ``batch``; returns the step's metrics."""
        s = self.schedule
        f = lr_factor(self.state.step, s.steps, s.warmup, s.decay_frac)
        for group in self.opt.param_groups:
            group["lr"] = group["base_lr"] * f
        stats = {}
        for spec in self.specs:
            x = self.inputs(batch, spec)
            stats[spec.name] = self._losses(spec, x, self.scaled(batch, spec.out_hooks) if spec.transcoder else x)
        for sae in self.saes.values():
            for p in sae.parameters():
                if p.grad is not None:
                    self.reduce(p.grad, "sum").div_(self.world)
            sae.remove_parallel_grads()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        row = {"step": self.state.step + 1, "tokens": (self.state.step + 1) * s.batch_size, "lr_factor": f}
        for spec in self.specs:
            self.saes[spec.name].normalize_decoder()
            row[spec.name] = self._metrics(spec, *stats[spec.name])
        self._require_finite(row, f)
        return row

    def _require_finite(self, row: dict, factor: float) -> None:
        """Stop at the first step whose loss or updated weights are not finite: Adam never recovers from a NaN
        weight, and every later step (and checkpoint, and the saved SAE) would carry it. Every rank sees the same
        reduced metrics and the same weights, so all ranks stop at the same step."""
        flags = [torch.isfinite(p).all() for sae in self.saes.values() for p in sae.parameters()]
        weights_ok = bool(torch.stack(flags).all()) if flags else True  # one device sync for every SAE
        for spec in self.specs:
            bad = [k for k, v in row[spec.name].items() if k not in _DERIVED and not math.isfinite(v)]
            if not weights_ok:
                bad += [f"weight {n}" for n, p in self.saes[spec.name].named_parameters()
                        if not bool(torch.isfinite(p).all())]
            if bad:
                raise TrainingDivergedError(
                    f"sae train: SAE {spec.name} diverged at step {row['step']} of {self.schedule.steps}: "
                    f"{', '.join(bad)} not finite (NaN or inf) at learning rate {spec.lr:g}"
                    f"{f' x {factor:.3g} (warm-up/decay)' if factor != 1 else ''}. Training stopped; no SAE was "
                    f"saved as this run's result. Lower --lr (the default, --lr 0, is "
                    f"{default_lr(spec.d_sae):.3g} for {spec.d_sae} latents) and rerun with --overwrite.")

    def _metrics(self, spec: SaeSpec, sums: torch.Tensor, fired: torch.Tensor, terms: dict) -> dict:
        sums = self.reduce(sums, "sum")
        rows = max(float(sums[3]), 1.0)  # the batch's rows (fewer than batch_size when rows are filtered out)
        since = self.since_fired[spec.name]
        since += int(rows)
        since[self.reduce(fired, "max").bool()] = 0
        out = {"mse": float(sums[0]) / rows, "fvu": float(sums[0] / sums[1]), "l0": float(sums[2]) / rows,
               "dead_frac": float((since >= self.schedule.dead_tokens).float().mean()),
               "cossim": float(sums[4]) / rows, "l2_ratio": float(sums[5]) / rows}
        out["explained_variance"] = 1.0 - out["fvu"]
        out.update({name: float(v) / self.world for name, v in zip(terms, sums[6:], strict=True)})
        return out

    def fit(self, batches: Iterator[tuple[dict, Cursor]], callbacks: TrainerCallbacks = TrainerCallbacks()) -> None:
        """Step through ``batches`` (each with the reader's cursor after it) until the schedule's last step."""
        for sae in self.saes.values():
            sae.train()
        s, window = self.schedule, []
        while self.state.step < s.steps:
            batch, cursor = next(batches)
            row = self.step(batch)
            self.state.step += 1
            self.state.cursor = cursor
            self.state.tokens += s.batch_size
            window.append(row)
            last = self.state.step == s.steps
            if self.state.step % max(1, s.log_every) == 0 or last:
                summary = _average(window, [spec.name for spec in self.specs])
                self.state.metrics.append(summary)
                window = []
                if callbacks.on_log:
                    callbacks.on_log(summary)
            if callbacks.on_step:
                callbacks.on_step(row)
            if callbacks.on_checkpoint and s.checkpoint_every > 0 and not last \
                    and self.state.step % s.checkpoint_every == 0:
                callbacks.on_checkpoint()

    # --- state for checkpoints (the caller stores it) ---------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"opt.{pid}.{key}": val for pid, st in self.opt.state_dict()["state"].items()
                   for key, val in st.items()}
        for name, sae in self.saes.items():
            tensors.update({f"sae.{name}.{k}": v.detach().clone() for k, v in sae.state_dict().items()})
            tensors[f"fired.{name}"] = self.since_fired[name]
        return {k: v.contiguous() for k, v in tensors.items()}

    def state_meta(self) -> dict:
        st = self.state
        return {"step": st.step, "epoch": st.epoch, "cursor": st.cursor.to_json() if st.cursor else None,
                "tokens": st.tokens, "param_groups": self.opt.state_dict()["param_groups"], "metrics": st.metrics}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
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
        cursor = Cursor.from_json(meta["cursor"]) if meta.get("cursor") else None
        self.state = TrainState(meta["step"], meta["epoch"], cursor, meta["tokens"], meta["metrics"])

"""The skeleton of every per-hook analysis (``stats``, ``probe``, ``align rsa``, ``align encode``): plan, one task
per hook, assemble.

``run_hook_analysis`` owns everything around the science: the run start (``runstart``: the output's lock, every
input opened once and pinned at one version, ``run.json``, ``--overwrite``), resuming a killed run (a hook is done
once ``OUT/hooks/HOOK.json`` exists, written last), the fan-out over Ray, reading the hooks' results back and the
summary.
An analysis supplies a ``HookAnalysis``: its plan (every check of the input, before any hook is read), its
per-hook function (handed the pinned dataset, the plan and a place for side files; it returns its outcome) and
its assembly (tables, plots and the summary from every hook's outcome), as SAELens' trainer is handed its data
provider and callbacks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, Protocol, TypeVar

from analysis.common.cost import CostEstimate
from analysis.common.fanout import run_pending_hooks
from analysis.common.finite import require_finite
from analysis.common.results import Results
from analysis.common.runstart import RunKind, StartedRun, run_start
from shards.reader import Dataset

HOOKS = "hooks"  #: OUT/hooks/: each hook's outcome (HOOK.json) and side files


class Record(Protocol):
    def to_json(self) -> dict: ...


C = TypeVar("C")  # the analysis' config (a HookTaskArgs with out)
P = TypeVar("P")  # its plan
O = TypeVar("O", bound=Record)  # one hook's outcome  # noqa: E741
S = TypeVar("S", bound=Record)  # the run's summary


@dataclass
class HookTask(Generic[C, P]):
    """What one hook's task receives; it pickles whole to a Ray worker, the dataset with its version."""

    cfg: C
    plan: P
    ds: Dataset  #: pinned at the run's version
    out: Results  #: OUT/hooks/, for the hook's side files (blocks, tensors, tables)


@dataclass
class Assembly(Generic[C, P]):
    """What the assembly receives: the run's config, plan, pinned dataset, hooks and output, and what the summary
    records of the inputs (``recorded``: ``dataset`` and ``inputs``, as ``RunSummary`` takes them)."""

    cfg: C
    plan: P
    ds: Dataset
    hooks: list[str]
    out: Results  #: OUT/
    recorded: dict = field(default_factory=dict)


@dataclass(frozen=True)
class HookAnalysis(Generic[C, P, O, S]):
    """What a per-hook analysis supplies to ``run_hook_analysis``."""

    name: str  #: its logger is actlake.<name>; its lock says "<name> output"
    command: str  #: the command, as run.json records it (``align rsa``)
    neutral: frozenset[str]  #: settings that do not change its results (out of the fingerprint)
    plan: Callable[[C, Dataset, list[str]], P]  #: every check of the input; reads no hook
    hook: Callable[[HookTask[C, P], str], O]  #: one hook -> its outcome (a record with to_json)
    outcome: type[O]  #: reads a hook's outcome back (``from_json``)
    assemble: Callable[[Assembly[C, P], dict[str, O]], S]  #: tables, plots, the summary (a record)
    summary: type[S]  #: reads a finished run's summary back (``from_json``)
    seeds: Callable[[C], dict[str, int]] = lambda cfg: {"seed": cfg.seed}
    describe: Callable[[C, P, Dataset, list[str]], str] | None = None  #: one log line once planned
    verb: str = "done"  #: "resuming: 3 of 7 hooks already <verb>"
    #: one hook's work and its time from a short timed sample of it (run in the driver on the first hook to do,
    #: before any hook starts): the run logs what it will compute and for how long, and records both in ``cost``
    estimate: Callable[[HookTask[C, P], str], CostEstimate] | None = None

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"actlake.{self.name}")


def _one_hook(fn: Callable[[HookTask, str], Record], task: HookTask, hook: str) -> Record:
    """Run one hook; its outcome is written last, as the mark that the hook is done."""
    import torch

    threads = getattr(task.cfg, "threads", 0)
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    outcome = fn(task, hook)
    if hasattr(outcome, "seconds"):
        outcome.seconds = round(time.perf_counter() - t0, 3)
    task.out.json(f"{hook}.json", outcome.to_json())
    return outcome


def _run(analysis: HookAnalysis, cfg, run: StartedRun):
    log = analysis.log
    require_finite(run.ds, run.hooks, analysis.command)
    plan = analysis.plan(cfg, run.ds, run.hooks)  # every check of the input happens here, before any hook is read
    for note in getattr(plan, "notes", None) or []:
        log.info("%s", note)
    if analysis.describe is not None:
        log.info("%s", analysis.describe(cfg, plan, run.ds, run.hooks))
    run.begin(cfg, analysis.seeds(cfg))
    hooks_out = run.out.child(HOOKS)
    task = HookTask(cfg, plan, run.ds, hooks_out)
    done = lambda h: hooks_out.storage.exists(f"{h}.json")  # noqa: E731
    cost = _estimate(analysis, task, [h for h in run.hooks if not done(h)], cfg.workers, len(run.hooks))
    t0 = time.perf_counter()  # what the estimate covers: the hooks left, not itself nor the assembly
    run_pending_hooks(partial(_one_hook, analysis.hook, task), run.hooks, done, workers=cfg.workers,
                      address=cfg.address, threads=cfg.threads, logger=log, verb=analysis.verb)
    seconds = time.perf_counter() - t0
    outcomes = {h: analysis.outcome.from_json(hooks_out.read_json(f"{h}.json")) for h in run.hooks}
    summary = analysis.assemble(Assembly(cfg, plan, run.ds, run.hooks, run.out, run.recorded()), outcomes)
    if cost is not None:
        log.info("the hooks took %.0f s (estimated %.0f s)", seconds, cost.seconds)
        summary.cost = cost.record(seconds)
    run.rundir.finish(summary.to_json())
    return summary


def _estimate(analysis: HookAnalysis, task: HookTask, todo: list[str], workers: int, total: int
              ) -> CostEstimate | None:
    """What the hooks left to do will cost, logged before they start (None: nothing to do, or no estimate)."""
    if analysis.estimate is None or not todo:
        return None
    one = analysis.estimate(task, todo[0])
    cost = one.times(len(todo), "hooks" if len(todo) > 1 else "hook", max(1, workers))
    if len(todo) < total:
        cost = dataclasses.replace(cost, work=f"{cost.work} ({total - len(todo)} of {total} hooks done before)")
    analysis.log.info("%s", cost.line())
    return cost


def run_hook_analysis(analysis: HookAnalysis[C, P, O, S], cfg: C) -> S:
    """Run ``analysis`` over ``cfg``'s hooks (or resume it, or return its finished summary) under the output's
    lock; every hook reads the one version the run pinned."""
    kind = RunKind(analysis.command, analysis.neutral, lock=f"{analysis.name} output")
    with run_start(cfg, kind, hooks=cfg.resolve_hooks) as run:
        if run.state == "done":
            analysis.log.info("%s already holds this finished run", run.out.display())
            return analysis.summary.from_json(run.rundir.summary())
        return _run(analysis, cfg, run)

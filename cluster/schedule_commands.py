"""``actlake schedule add|run|serve|list|history|remove|export``: scheduled extraction of growing inputs."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from simple_parsing import field

from cluster.schedules import (
    Schedule,
    ScheduleError,
    ScheduleStore,
    due,
    iso,
    job_config,
    parse_duration,
    parse_time,
    run_tick_now,
)
from ingest.incremental import OnChanged
from shards.config import nested
from shards.errors import ConfigError
from shards.storage import StorageOptions

log = logging.getLogger("actlake.schedule")


@dataclass(kw_only=True)
class _WithState:
    state: str | None = None
    """Where schedules live: a folder or an object-store prefix (default: $ACTLAKE_SCHEDULES, else
    ~/.actlake/schedules)."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options of the state store (endpoint, region, profile, ...)."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)

    def store(self) -> ScheduleStore:
        return ScheduleStore(self.state, self.storage)


@dataclass
class ScheduleAddConfig(_WithState):
    """Add a schedule: the extraction job file run every --every or on --cron, extracting only what is new."""

    name: str = field(positional=True, metavar="NAME")
    """The schedule's name (lower-case letters, digits and -, a letter or digit at each end; at most 50)."""

    config: str = ""
    """The job file: `actlake extract` options as YAML, with `data` a glob of files, a folder or a growing table."""

    every: str | None = None
    """Run a tick this often, e.g. 30m, 6h, 1d (the first tick is due at once)."""

    cron: str | None = None
    """Run a tick when this cron expression matches (UTC), e.g. '0 */6 * * *'."""

    on_changed: OnChanged = "warn"
    """An input that changed after it was extracted: warn (keep its rows), fail (the tick stops before any work),
    or reextract (its units are dropped and extracted again)."""


@dataclass
class ScheduleNameConfig(_WithState):
    name: str = field(positional=True, metavar="NAME")
    """The schedule's name."""


@dataclass
class ScheduleRunConfig(ScheduleNameConfig):
    """Run one tick now: extract what is new since the last tick, then stop."""

    abandon_planned: bool = field(default=False, action="store_true")
    """An unfinished tick (one of its inputs gone or changed) is abandoned instead of finished: its committed units
    are dropped, and this tick plans again from what the inputs hold now."""

    now: str | None = None
    """The time the tick runs at (ISO, e.g. 2026-11-23T06:00:00Z; default: the clock): sets the next due time."""

    address: str | None = None
    """Ray address the tick's extraction joins (default: the job file's, else a local Ray)."""


@dataclass
class ScheduleServeConfig(_WithState):
    """Run due ticks of every schedule under --state, forever (e.g. as a Ray job on the head node)."""

    address: str | None = None
    """Ray address every tick's extraction joins (default: the job file's, else a local Ray)."""

    poll: float = 60.0
    """Longest sleep between looks at the schedules (seconds)."""

    once: bool = field(default=False, action="store_true")
    """Run the ticks due now, then exit (for cron-like callers and tests)."""

    now: str | None = None
    """With --once: the time to run at (ISO; default: the clock)."""


@dataclass
class ScheduleListConfig(_WithState):
    """List the schedules: when each runs next, and how its last tick ended."""


@dataclass
class ScheduleHistoryConfig(ScheduleNameConfig):
    """A schedule's ticks: start, end, inputs found, units written, rows, errors."""

    json: bool = field(default=False, action="store_true")
    """One JSON object per tick."""


@dataclass
class ScheduleRemoveConfig(ScheduleNameConfig):
    """Remove a schedule and its history (the dataset it fills is kept)."""


@dataclass
class ScheduleExportConfig(ScheduleNameConfig):
    """Print a Kubernetes manifest that runs the schedule's ticks: a KubeRay RayCronJob."""

    kuberay: bool = field(default=False, action="store_true")
    """A KubeRay RayCronJob (KubeRay >= 1.6) whose RayJob runs `actlake schedule run NAME`."""

    cronjob: bool = field(default=False, action="store_true")
    """Instead: a Kubernetes CronJob that submits the tick to a running RayCluster with `ray job submit`."""

    image: str = "ghcr.io/actlake/actlake:latest"
    """Container image with actlake installed."""

    namespace: str = "default"
    """Kubernetes namespace."""

    secret: str = "actlake-s3"
    """Kubernetes secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (never inlined)."""

    gpus: int = 0
    """GPUs per worker pod of the tick's cluster."""

    workers: int = 1
    """Worker pods of the tick's cluster."""

    ray_cluster: str = "actlake"
    """--cronjob: the RayCluster whose head service receives the job."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kuberay == self.cronjob:
            raise ScheduleError("choose one of --kuberay (a RayCronJob) and --cronjob (a CronJob: ray job submit)")


def cmd_add(cfg: ScheduleAddConfig) -> int:
    if not cfg.config:
        raise ScheduleError("--config: name the extraction job file (actlake extract options as YAML)")
    path = Path(cfg.config)
    if not path.is_file():
        raise ScheduleError(f"job file {cfg.config!r} not found (looked at {path.resolve()})")
    schedule = Schedule(name=cfg.name, job=path.read_text(), created=iso(parse_time(None)),
                        every_s=parse_duration(cfg.every) if cfg.every else None, cron=cfg.cron,
                        on_changed=cfg.on_changed)
    job = job_config(schedule, cfg.config)  # a bad job file is refused now, not at the first tick
    from ingest.incremental import input_kind

    input_kind(job)
    status = cfg.store().add(schedule)
    print(f"added schedule {cfg.name!r} ({schedule.describe()}) under {cfg.store().storage.display()}: "
          f"{job.data} -> {job.out}; next tick due {status.next_due}")
    return 0


def cmd_run(cfg: ScheduleRunConfig) -> int:
    h = run_tick_now(cfg.store(), cfg.name, parse_time(cfg.now), cfg.address, abandon_planned=cfg.abandon_planned)
    if h.status == "busy":
        print(f"schedule {cfg.name!r}: another tick is running; this one did nothing")
    print(json.dumps(dataclasses.asdict(h)))
    return 0


def cmd_serve(cfg: ScheduleServeConfig) -> int:
    store = cfg.store()
    stop = {"now": False}

    def on_term(_signum, _frame) -> None:  # finish the tick in progress, then leave
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    log.info("serving schedules under %s (poll %.0fs)", store.storage.display(), cfg.poll)
    while not stop["now"]:
        now = parse_time(cfg.now if cfg.once else None)
        for name in due(store, now):
            try:
                h = run_tick_now(store, name, now, cfg.address)
                log.info("schedule %s: %s", name, json.dumps(dataclasses.asdict(h)))
            except Exception as exc:  # noqa: BLE001 - one schedule's failure (recorded in its history) stops no other
                log.error("schedule %s: tick failed: %s: %s", name, type(exc).__name__, exc)
        if cfg.once:
            break
        upcoming = []
        for n in store.names():
            try:
                upcoming.append(parse_time(store.status(n).next_due))
            except (ScheduleError, ConfigError):
                continue  # reported by due()
        wait = min([cfg.poll, *((t - parse_time(None)).total_seconds() for t in upcoming)])
        time.sleep(max(1.0, wait))
    return 0


def cmd_list(cfg: ScheduleListConfig) -> int:
    store = cfg.store()
    names = store.names()
    if not names:
        print(f"no schedules under {store.storage.display()}")
    for n in names:
        try:
            s, st = store.get(n), store.status(n)
        except (ScheduleError, ConfigError) as exc:
            print(f"{n:<24} damaged: {exc}")
            continue
        print(f"{n:<24} {s.describe():<22} next {st.next_due}  ticks {st.ticks:>4}  last {st.last_status or '-'}")
    return 0


def cmd_history(cfg: ScheduleHistoryConfig) -> int:
    for h in cfg.store().history(cfg.name):
        if cfg.json:
            print(json.dumps(dataclasses.asdict(h)))
        else:
            line = (f"#{h.run:<4} {h.start} -> {h.end}  {h.status:<12} tick {h.tick or '-':<8} "
                    f"inputs {h.inputs_found:>5} new {h.new_inputs:>4} units {h.units_written:>4} "
                    f"rows {h.rows:>9,} v{h.dataset_version}")
            print(line + (f"  error: {h.error}" if h.error else ""))
    return 0


def cmd_remove(cfg: ScheduleRemoveConfig) -> int:
    cfg.store().remove(cfg.name)
    print(f"removed schedule {cfg.name!r}")
    return 0


def cmd_export(cfg: ScheduleExportConfig) -> int:
    import yaml

    from cluster.kuberay import cronjob_submitting, raycronjob

    store = cfg.store()
    schedule = store.get(cfg.name)
    job_config(schedule)
    state = store.uri if "://" in store.uri else None
    if store.had_credentials:
        log.warning("--state carried credentials: they are left out of the manifest; its pods read them from the "
                    "Kubernetes secret %r (--secret), as the templates do (docs/operations.md)", cfg.secret)
    if state is None:
        log.warning("--state %s is a local folder: pods cannot reach it; use an object-store prefix", store.uri)
    cron = schedule.cron or _every_as_cron(schedule.every_s)
    doc = (raycronjob if cfg.kuberay else cronjob_submitting)(
        cfg.name, cron, state or store.uri, cfg.image, cfg.namespace, cfg.secret, cfg.gpus, cfg.workers,
        cfg.ray_cluster)
    print(yaml.safe_dump(doc, sort_keys=False), end="")
    return 0


def _every_as_cron(seconds: float) -> str:
    """``--every`` as the nearest cron expression Kubernetes accepts (minutes, hours or days)."""
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = round(minutes / 60)
    return f"0 */{hours} * * *" if hours < 24 else f"0 0 */{max(1, round(hours / 24))} * *"


__all__ = ["cmd_add", "cmd_export", "cmd_history", "cmd_list", "cmd_remove", "cmd_run", "cmd_serve"]

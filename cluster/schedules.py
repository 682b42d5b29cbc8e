"""Schedules of batch extraction: their state on any store, when a tick is due, running one, its history.

State lives under a prefix (``--state``: a folder or an object-store prefix), so any machine that can reach it
can run the next tick::

    <state>/<name>/schedule.json          the definition: the job file's text, --every or --cron, --on-changed
    <state>/<name>/status.json            next due time, last tick's status, ticks run
    <state>/<name>/history/NNNNNN.json    one record per tick run: start, end, inputs found, units, rows, errors
    <state>/<name>/_lock.json             the lease: one tick of a schedule at a time, on any machine

Time is injectable (``now``) so that due times and missed ticks are testable without waiting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shards.errors import ActlakeError, ConfigError, DatasetLockedError
from shards.secrets import redact_uri
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.schedule")
STATE_ENV = "ACTLAKE_SCHEDULES"
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: a Kubernetes name once ``actlake-tick-`` is put before it (63 characters at most): the export names its jobs so
SCHEDULE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?")


class ScheduleError(ActlakeError, ValueError):
    """A schedule is missing, exists already, or its definition is wrong."""


def check_name(name: str) -> str:
    """``name`` if it is a schedule name: lower-case letters, digits and ``-``, a letter or digit at each end, 50
    characters at most. Checked wherever a name is used, so that no name reaches outside the state prefix."""
    if isinstance(name, str) and SCHEDULE_NAME.fullmatch(name):
        return name
    why = ("it starts with '-' (the shell and actlake read that as a flag)" if str(name).startswith("-") else
           "it is longer than 50 characters" if len(str(name)) > 50 else "it holds other characters")
    raise ScheduleError(f"schedule name {name!r}: {why}. Use lower-case letters, digits and '-', starting and "
                        "ending with a letter or digit, e.g. nightly-crawl (names become Kubernetes names: "
                        "actlake-tick-NAME)")


def default_state() -> str:
    """``$ACTLAKE_SCHEDULES``, else ``~/.actlake/schedules``."""
    return os.environ.get(STATE_ENV) or os.path.join(os.path.expanduser("~"), ".actlake", "schedules")


def parse_duration(text: str) -> float:
    """``6h`` -> 21600 seconds (s, m, h, d, w; ``1h30m`` adds up)."""
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text):
        raise ConfigError(f"--every {text!r}: give a duration such as 30m, 6h, 1d or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 1:
        raise ConfigError(f"--every {text!r} is shorter than a second")
    return seconds


def parse_time(text: str | None) -> datetime:
    """An ISO time (``2026-11-23T06:00:00Z``; no zone means UTC), or now."""
    if not text:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--now {text!r} is not an ISO time, e.g. 2026-11-23T06:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Schedule:
    """A schedule's definition (``schedule.json``)."""

    name: str
    job: str  #: the job file's YAML text (``actlake extract --config`` options; never credentials)
    created: str
    every_s: float | None = None
    cron: str | None = None
    on_changed: str = "warn"

    def __post_init__(self) -> None:
        check_name(self.name)
        if (self.every_s is None) == (self.cron is None):
            raise ScheduleError("give exactly one of --every (e.g. 6h) and --cron (e.g. '0 */6 * * *')")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ScheduleError(f"--cron {self.cron!r} is not a cron expression (e.g. '0 */6 * * *')")
        if self.on_changed not in ("warn", "fail", "reextract"):
            raise ScheduleError(f"--on-changed {self.on_changed!r}: use warn, fail or reextract")

    def first_due(self) -> datetime:
        """``--every``: at once; ``--cron``: the first matching time after the schedule was added."""
        created = parse_time(self.created)
        return created if self.every_s is not None else self._next_cron(created)

    def next_due(self, after: datetime) -> datetime:
        """The first slot strictly after ``after``: slots missed while nothing ran collapse into the tick that ran."""
        if self.every_s is None:
            return self._next_cron(after)
        created = parse_time(self.created)
        slots = int((after - created).total_seconds() // self.every_s) + 1
        return created + timedelta(seconds=max(slots, 1) * self.every_s)

    def _next_cron(self, after: datetime) -> datetime:
        from croniter import croniter

        return croniter(self.cron, after.astimezone(UTC)).get_next(datetime).astimezone(UTC)

    def describe(self) -> str:
        return f"every {self.every_s:g}s" if self.every_s is not None else f"cron '{self.cron}'"


@dataclass
class Status:
    """A schedule's state between ticks (``status.json``)."""

    next_due: str
    ticks: int = 0
    last_start: str = ""
    last_end: str = ""
    last_status: str = ""  #: extracted, resumed, nothing new, busy, failed


@dataclass
class TickHistory:
    """One tick run, as ``schedule history`` shows it."""

    run: int
    start: str
    end: str = ""
    status: str = "running"
    tick: str = ""
    inputs_found: int = 0
    new_inputs: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    units_written: int = 0
    rows: int = 0
    dataset_version: int = 0
    error: str = ""


class ScheduleStore:
    """Schedules under one state prefix."""

    def __init__(self, state: str | None = None, storage_options: StorageOptions | dict | None = None) -> None:
        self.storage = Storage(state or default_state(), storage_options)  # takes KEY:SECRET@ out of the URI
        self.uri = redact_uri(state or default_state())  #: what is shown and exported: never a credential
        self.had_credentials = self.uri != (state or default_state())
        self.storage_options = storage_options

    def _get(self, rel: str, cls: type):
        """A state file as its record; a damaged one (truncated, not JSON, other keys) is a ScheduleError that
        names it, never a traceback."""
        raw = self.storage.get_bytes(rel)
        try:
            data = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            name = rel.split("/", 1)[0]
            raise ScheduleError(f"{self.storage.display(rel)} is damaged ({type(exc).__name__}: {exc}). Fix the file, "
                                f"or remove the schedule (`actlake schedule remove {name}`) and add it again; the "
                                "dataset is not affected") from None

    def _put(self, rel: str, obj) -> None:
        self.storage.put_bytes(rel, (json.dumps(dataclasses.asdict(obj), indent=1) + "\n").encode())

    def names(self) -> list[str]:
        """Schedules under the prefix (folders holding a ``schedule.json`` whose name is a schedule name)."""
        import posixpath

        found = sorted(posixpath.basename(posixpath.dirname(h)) for h in self.storage.glob("*/schedule.json"))
        bad = [n for n in found if not SCHEDULE_NAME.fullmatch(n)]
        if bad:
            log.warning("ignoring %s under %s: not schedule names (lower-case letters, digits and '-')", bad,
                        self.storage.display())
        return [n for n in found if n not in bad]

    def get(self, name: str) -> Schedule:
        check_name(name)
        try:
            return self._get(f"{name}/schedule.json", Schedule)
        except FileNotFoundError:
            known = self.names()
            raise ScheduleError(f"no schedule {name!r} under {self.storage.display()}"
                                f"{f' (schedules: {known})' if known else ''}; add one with `actlake schedule add`"
                                ) from None

    def status(self, name: str) -> Status:
        check_name(name)
        try:
            return self._get(f"{name}/status.json", Status)
        except FileNotFoundError:
            return Status(iso(self.get(name).first_due()))

    def add(self, schedule: Schedule) -> Status:
        if self.storage.exists(f"{schedule.name}/schedule.json"):
            raise ScheduleError(f"schedule {schedule.name!r} exists under {self.storage.display()}; remove it first")
        self._put(f"{schedule.name}/schedule.json", schedule)
        status = Status(iso(schedule.first_due()))
        self._put(f"{schedule.name}/status.json", status)
        return status

    def remove(self, name: str) -> None:
        self.get(name)  # checks the name: nothing outside the prefix is ever removed
        self.storage.delete_prefix(name)

    def history(self, name: str) -> list[TickHistory]:
        self.get(name)
        files = sorted(f for f in self.storage.list(f"{name}/history") if f.endswith(".json"))
        out = []
        for f in files:
            try:
                out.append(self._get(f"{name}/history/{f}", TickHistory))
            except ScheduleError as exc:  # one damaged record hides none of the others
                out.append(TickHistory(run=int(f.split(".")[0]) if f.split(".")[0].isdigit() else 0, start="",
                                       status="damaged", error=str(exc)))
        return out

    def close_killed(self, name: str, after: int = 0) -> int:
        """Mark the attempts still ``running`` in the history as ``killed`` (called under the lease: none of them
        can still run); the highest run number recorded. Only the records numbered ``after`` (the last run the
        status recorded: an interrupted attempt records its status still ``running``) and above are read: every
        earlier one was closed by the tick that recorded a later run. One listing and a record or two per tick,
        not the whole history (8,760 records after a year of hourly ticks)."""
        self.get(name)
        runs = sorted(int(f[:-5]) for f in self.storage.list(f"{name}/history")
                      if f.endswith(".json") and f[:-5].isdigit())
        for run in (r for r in runs if r >= after):
            try:
                h = self._get(f"{name}/history/{run:06d}.json", TickHistory)
            except ScheduleError:
                continue  # a damaged record: `schedule history` shows it; its number stays taken
            if h.status == "running":
                self.write_history(name, dataclasses.replace(
                    h, status="killed", error="the tick's process ended before the tick did (killed or lost)"))
        return max(runs, default=0)

    def write_history(self, name: str, h: TickHistory) -> None:
        self._put(f"{check_name(name)}/history/{h.run:06d}.json", h)

    def write_status(self, name: str, status: Status) -> None:
        self._put(f"{check_name(name)}/status.json", status)

    def lease(self, name: str):
        """The lease of a schedule: the write-lock mechanism on ``<state>/<name>/`` (a dead holder's is taken
        over: at once on its own host, else after the ttl)."""
        from shards.lock import WriteLock

        return WriteLock(self.storage.child(check_name(name)), ttl=300.0, what="schedule")


def job_config(schedule: Schedule, where: str = "schedule"):
    """The schedule's ExtractConfig, from its job text; refused when it carries credentials."""
    from cluster.jobfiles import normalise, read_job_file_text
    from ingest.config import ExtractConfig
    from shards.secrets import secret_values
    from shards.storage import as_fsspec_options

    cfg = ExtractConfig(**normalise(read_job_file_text(schedule.job, where), ExtractConfig, "extract", where))
    uris = [str(u) for u in (cfg.data, cfg.out) if u]  # a presigned URL or ?token= is a credential too
    if secret_values(as_fsspec_options(cfg.storage)) or any(redact_uri(u) != u for u in uris):
        raise ScheduleError(f"{where}: the job file holds credentials; schedule state is shared, so give them to "
                            "the machines that run ticks instead (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile "
                            "with --profile, or a Kubernetes secret: docs/operations.md)")
    return cfg


def run_tick_now(store: ScheduleStore, name: str, now: datetime, address: str | None = None,
                 abandon_planned: bool = False) -> TickHistory:
    """One tick of schedule ``name`` at ``now`` under its lease: extract what is new, record history and the next
    due time. Another tick holding the lease (or the dataset's write lock) makes this one say so and return
    status ``busy`` (nothing written)."""
    from analysis.interventions import build
    from ingest.incremental import run_tick

    schedule = store.get(name)
    cfg = job_config(schedule, f"schedule {name}")
    if address:
        cfg = dataclasses.replace(cfg, address=address)
    lease = store.lease(name)
    try:
        lease.acquire()
    except DatasetLockedError as exc:
        log.info("schedule %s: another tick is running (%s)", name, str(exc).split(". ")[0])
        return TickHistory(0, iso(now), iso(now), "busy", error="another tick of this schedule is running")
    try:
        status = store.status(name)
        # a killed attempt keeps its number and its record
        run = max(status.ticks, store.close_killed(name, after=status.ticks)) + 1
        h = TickHistory(run, iso(now))
        store.write_history(name, h)
        t0 = time.time()
        try:
            result = run_tick(cfg, schedule=name, on_changed=schedule.on_changed, abandon_planned=abandon_planned,
                              resolver=build)
            h = dataclasses.replace(h, status=result.status, tick=result.tick, inputs_found=result.inputs_found,
                                    new_inputs=len(result.new_inputs), changed=result.changed,
                                    missing=result.missing, units_written=result.units_written, rows=result.rows,
                                    dataset_version=result.version)
        except DatasetLockedError as exc:  # a one-off `extract` (or another schedule) is writing the dataset
            h = dataclasses.replace(h, status="busy", error=str(exc))
        except Exception as exc:
            h = dataclasses.replace(h, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            h.end = iso(now + timedelta(seconds=time.time() - t0))
            store.write_history(name, h)
            store.write_status(name, Status(iso(schedule.next_due(now)), run, h.start, h.end, h.status))
        return h
    finally:
        lease.release_quietly()


def due(store: ScheduleStore, now: datetime) -> list[str]:
    """Schedules whose next due time has come; a schedule whose state is damaged is reported and left out, so
    that the others keep ticking."""
    out = []
    for n in store.names():
        try:
            if parse_time(store.status(n).next_due) <= now:
                out.append(n)
        except (ScheduleError, ConfigError) as exc:
            log.error("schedule %s skipped: %s", n, exc)
    return out

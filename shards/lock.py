"""The write lock: one writer per dataset at a time.

Two writers on one dataset would each fold commit records and race for version numbers, so a second writer is
refused. The lock is an object created only-if-absent (``O_EXCL`` on disks, a conditional PUT on S3). A lock
whose holder died is taken over: at once when the holder ran on this host and its process is gone, otherwise
once its heartbeat is older than ``ttl`` seconds and stays unchanged while watched for a third of the ttl (a
live holder beats every quarter: a host whose clock runs ahead never takes a live writer's lock).

The lock is advice, not a fence: a holder that stalls past its ttl (a paused process, a suspended machine) is
taken over and may resume. What keeps it from rewriting history is the commit itself, which creates a version's
log entry only if absent (``shards.versionlog.create_version``); the lock only makes that race rare and lets the
old holder stop early, naming what happened (``check``: before each version and each commit record).

Heartbeats go to an object of the holder's own (``_lock.json.<token>.beat``), never to ``_lock.json``: a holder that
resumes after it was taken over cannot write over the new holder's lock, wherever it stalled.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid

from shards.errors import DatasetLockedError, LockLostError
from shards.layout import LOCK
from shards.manifest import now_iso
from shards.storage import Storage

log = logging.getLogger("actlake.lock")
UNREADABLE_GRACE_S = 1.0  #: how long an unparsable lock gets to become a whole one (a writer creating it)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is alive (a zombie is not)."""
    if pid <= 0:  # kill(0 or -1, 0) would ask about whole process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def command_line(pid: int) -> str:
    """The command line of process ``pid`` on this host (empty when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


DEAD_AFTER_TTLS = 3  #: a holder silent for this many ttls is not alive, whatever process has its PID now
MAX_TTL_S = 86_400.0  #: the longest lock ttl a writer takes (a day); a lock claiming more is not a writer's


def refuse_breaking_a_live_holder(storage: Storage, holder: dict, what: str) -> None:
    """A lock held by a live process on this host is never broken: its writer would go on committing over
    whoever took the lock, and lose units (it did, before this check)."""
    if holder.get("unreadable") or holder.get("host") != socket.gethostname() or not pid_alive(holder["pid"]):
        return
    age = time.time() - float(holder.get("heartbeat", 0))
    ttl = float(holder.get("ttl", 300))
    if not (math.isfinite(age) and math.isfinite(ttl) and 0 < ttl <= MAX_TTL_S) or age < -MAX_TTL_S:
        # a heartbeat far in the future or a ttl no writer uses: not a lock an actlake writer keeps (planted,
        # damaged): it never stands in the way of `unlock`
        log.warning("the lock names pid %s with heartbeat age %.0fs and ttl %s: not a live writer's lock",
                    holder["pid"], age, ttl)
        return
    if age > DEAD_AFTER_TTLS * ttl:
        # A writer beats every quarter of its ttl: one silent for many ttls is not the process that now has its
        # PID (reused after a reboot), or one paused so long that, resumed, it finds the lock lost and stops (the
        # version it would commit next is fenced by the log's create-if-absent).
        log.warning("the lock's holder pid %s has not beaten for %.0fs (%.0f× its ttl): not that process",
                    holder["pid"], age, age / ttl)
        return
    cmd = command_line(holder["pid"])
    raise DatasetLockedError(
        f"{what} {storage.display()} is held by process {holder['pid']} on this host, which is alive"
        f"{f' ({cmd[:200]})' if cmd else ''}, since {holder.get('acquired')}. A live holder's lock is never broken: "
        "wait for it, or stop that process first (its lock is then taken over at once).")


class WriteLock:
    """Held by a DatasetWriter from open to close; refreshed by a heartbeat thread."""

    def __init__(self, storage: Storage, ttl: float = 300.0, what: str = "dataset") -> None:
        self.storage, self.what = storage, what
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and 0 < ttl <= MAX_TTL_S):
            raise ValueError(f"lock ttl {ttl!r}: give seconds in (0, {MAX_TTL_S:.0f}] (a day at most)")
        self.ttl = ttl
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acquired = ""
        self.lost: LockLostError | None = None  #: set once this lock is found taken over; then raised by ``check``

    def _body(self) -> bytes:
        return json.dumps({
            "token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
            "acquired": self._acquired or now_iso(), "heartbeat": time.time(), "ttl": self.ttl,
        }).encode()

    @staticmethod
    def beat_path(token: str) -> str:
        """Where the holder with ``token`` records its heartbeats."""
        return f"{LOCK}.{token}.beat" if token.isalnum() else f"{LOCK}.beat"

    def check(self) -> None:
        """Raise LockLostError unless this writer still holds the lock (one read of it): called before each
        version is committed, so a writer that stalled and was taken over stops, naming what happened, before it
        writes anything more."""
        if self.lost is None:
            holder = self._holder()
            if holder is None or holder.get("token") != self.token:
                self._lose(holder)
        if self.lost is not None:
            raise self.lost

    def _lose(self, holder: dict | None) -> None:
        who = ("nobody holds it now" if holder is None else "it is unreadable" if holder.get("unreadable") else
               f"host {holder.get('host')} pid {holder.get('pid')} holds it since {holder.get('acquired')}")
        self.lost = LockLostError(
            f"this writer lost the write lock of {self.what} {self.storage.display()} ({who}): its heartbeat looked "
            f"older than {self.ttl:.0f}s to another writer (a paused process, a suspended machine, a long stall, or "
            "another host's clock), or the lock file was removed (`actlake unlock`, a deleted folder), and the lock "
            "was taken. It stops and commits nothing more; the units it wrote are in commit records, which the "
            "writer that holds the dataset now folds (rerun the job to resume).")
        self._stop.set()

    def _stale(self, holder: dict) -> str | None:
        if holder.get("host") == socket.gethostname() and not pid_alive(holder["pid"]):
            return f"its process {holder.get('pid')} on this host is gone"
        age = time.time() - holder["heartbeat"]
        if age > holder["ttl"]:
            return f"its heartbeat is {age:.0f}s old"
        return None

    def _holder(self) -> dict | None:
        """The lock's content; None when it is gone. A lock that cannot be parsed (empty, garbled, not an
        object: left by a disk that filled up while it was created) is read again after a moment, in case a
        writer is creating it right now, and then counts as stale."""
        for attempt in range(2):
            try:
                raw = self.storage.get_bytes(LOCK)
            except FileNotFoundError:
                return None
            try:
                holder = json.loads(raw)
                if isinstance(holder, dict):
                    holder["heartbeat"], holder["ttl"] = float(holder.get("heartbeat", 0)), float(
                        holder.get("ttl", self.ttl))
                    holder["pid"] = int(holder.get("pid", -1))
                    holder["heartbeat"] = max(holder["heartbeat"], self._beat(str(holder.get("token", ""))))
                    return holder
            except (ValueError, TypeError):
                pass
            if attempt == 0:
                time.sleep(UNREADABLE_GRACE_S)
        return {"unreadable": True}

    def _beat(self, token: str) -> float:
        """The last heartbeat the holder with ``token`` recorded in its beat object (0 when none)."""
        try:
            return float(json.loads(self.storage.get_bytes(self.beat_path(token))).get("heartbeat", 0))
        except (FileNotFoundError, ValueError, TypeError, AttributeError):
            return 0.0

    def _still_beating(self, holder: dict) -> bool:
        """Whether a holder whose heartbeat looks stale by this host's clock beats while watched (a third of its
        ttl; it beats every quarter): then it is alive and a clock is off. A dead holder on this host, or one whose
        lock cannot be parsed, is not watched."""
        if holder.get("unreadable") or (holder.get("host") == socket.gethostname() and not pid_alive(holder["pid"])):
            return False
        time.sleep(holder["ttl"] / 3)
        again = self._holder()
        return again is not None and again.get("token") == holder.get("token") and (
            again.get("heartbeat") != holder.get("heartbeat"))

    def acquire(self, break_lock: bool = False) -> None:
        for _ in range(3):
            self._acquired = now_iso()
            if self.storage.create_exclusive(LOCK, self._body()):
                self._start_heartbeat()
                return
            holder = self._holder()
            if holder is None:
                continue  # released between our two calls: try again
            if break_lock:
                refuse_breaking_a_live_holder(self.storage, holder, self.what)
            reason = ("break_lock=True was given" if break_lock else
                      "it cannot be parsed (a writer died while creating it)" if holder.get("unreadable")
                      else self._stale(holder))
            if reason is not None and not break_lock and self._still_beating(holder):
                raise DatasetLockedError(
                    f"{self.what} {self.storage.display()} is being written by another writer (host "
                    f"{holder.get('host')}, pid {holder.get('pid')}): its heartbeat looks {reason.split(' is ')[-1]} "
                    "by this host's clock, but it went on beating while watched, so it is alive and a clock is off "
                    "(check NTP on both hosts). Wait for it to finish.")
            if reason is None:
                raise DatasetLockedError(
                    f"{self.what} {self.storage.display()} is being written by another writer "
                    f"(host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('acquired')}). "
                    "Wait for it to finish; if it is dead on another host, its lock expires "
                    f"{holder['ttl']:.0f}s after its last heartbeat, or break it once you are sure: "
                    f"`actlake unlock {self.storage.display()}` (break_lock=True in Python)."
                )
            log.warning("taking over the write lock of %s: %s", self.storage.display(), reason)
            self.storage.delete(LOCK)
            if holder.get("token"):
                self.storage.delete(self.beat_path(str(holder["token"])))
        raise DatasetLockedError(f"could not acquire the write lock of {self.storage.display()}; another writer "
                                 f"keeps taking it. If none is running: `actlake unlock {self.storage.display()}`.")

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.ttl / 4):
                try:
                    holder = self._holder()
                    if holder is None or holder.get("token") != self.token:
                        self._lose(holder)  # taken over while this process stalled
                        log.error("%s", self.lost)
                        return
                    # its own object: stalled between the check and this write, it still never writes another's lock
                    self.storage.put_bytes(self.beat_path(self.token), json.dumps({"heartbeat": time.time()}).encode())
                except Exception as exc:  # noqa: BLE001 - keep beating; the writer reports real errors
                    log.warning("lock heartbeat failed: %s", exc)

        self._thread = threading.Thread(target=beat, name="actlake-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.storage.delete(self.beat_path(self.token))
        if self.lost is not None:  # taken over: the lock there is another holder's
            return
        try:
            holder = json.loads(self.storage.get_bytes(LOCK))
            if isinstance(holder, dict) and holder.get("token") == self.token:
                self.storage.delete(LOCK)
        except (FileNotFoundError, ValueError):
            pass

    def release_quietly(self) -> None:
        """Release while another error is on its way to the caller: a failure here (the store is down)
        is logged, never raised, so the caller sees the error that matters."""
        try:
            self.release()
        except Exception as exc:  # noqa: BLE001 - the original error wins; the lock expires after its ttl
            log.warning("could not release the write lock of %s (%s); it expires after %.0fs",
                        self.storage.display(), exc, self.ttl)


def break_lock(storage: Storage) -> dict | None:
    """Remove a dataset's write lock whoever holds it (``actlake unlock``); the holder it had, if any."""
    holder = WriteLock(storage)._holder()
    if holder is not None:
        refuse_breaking_a_live_holder(storage, holder, "dataset")
        log.warning("breaking the write lock of %s (holder: %s)", storage.display(),
                    "unreadable" if holder.get("unreadable") else f"host {holder.get('host')} pid {holder.get('pid')}")
        storage.delete(LOCK)
        if holder.get("token"):
            storage.delete(WriteLock.beat_path(str(holder["token"])))
    return holder

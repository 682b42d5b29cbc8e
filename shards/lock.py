"""The write lock: one writer per dataset at a time.

Two writers on one dataset could each fold a different set of commit records
into ``manifest.json`` and the later write would hide the other's units, so
a second writer is refused. The lock is an object created only-if-absent
(``O_EXCL`` on disks, a conditional PUT on S3). A lock whose holder died is
taken over: at once when the holder ran on this host and its process is
gone, otherwise once its heartbeat is older than ``ttl`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from shards.errors import DatasetLockedError
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


def refuse_breaking_a_live_holder(storage: Storage, holder: dict, what: str) -> None:
    """A lock held by a live process on this host is never broken: its writer would go on committing over
    whoever took the lock, and lose units (it did, before this check)."""
    if holder.get("unreadable") or holder.get("host") != socket.gethostname() or not pid_alive(holder["pid"]):
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
        self.ttl = ttl
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({
            "token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
            "acquired": now_iso(), "heartbeat": time.time(), "ttl": self.ttl,
        }).encode()

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
                    return holder
            except (ValueError, TypeError):
                pass
            if attempt == 0:
                time.sleep(UNREADABLE_GRACE_S)
        return {"unreadable": True}

    def acquire(self, break_lock: bool = False) -> None:
        for _ in range(3):
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
        raise DatasetLockedError(f"could not acquire the write lock of {self.storage.display()}; another writer "
                                 f"keeps taking it. If none is running: `actlake unlock {self.storage.display()}`.")

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.ttl / 4):
                try:
                    self.storage.put_bytes(LOCK, self._body())
                except Exception as exc:  # noqa: BLE001 - keep beating; the writer reports real errors
                    log.warning("lock heartbeat failed: %s", exc)

        self._thread = threading.Thread(target=beat, name="actlake-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
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
    return holder

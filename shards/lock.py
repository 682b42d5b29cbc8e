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


def _pid_alive(pid: int) -> bool:
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


class WriteLock:
    """Held by a DatasetWriter from open to close; refreshed by a heartbeat thread."""

    def __init__(self, storage: Storage, ttl: float = 300.0) -> None:
        self.storage = storage
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
        if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
            return f"its process {holder.get('pid')} on this host is gone"
        age = time.time() - float(holder.get("heartbeat", 0))
        if age > float(holder.get("ttl", self.ttl)):
            return f"its heartbeat is {age:.0f}s old"
        return None

    def acquire(self, break_lock: bool = False) -> None:
        for _ in range(3):
            if self.storage.create_exclusive(LOCK, self._body()):
                self._start_heartbeat()
                return
            try:
                holder = json.loads(self.storage.get_bytes(LOCK))
            except (FileNotFoundError, ValueError):
                continue  # released (or half-written) between our two calls: try again
            reason = "break_lock=True was given" if break_lock else self._stale(holder)
            if reason is None:
                raise DatasetLockedError(
                    f"dataset {self.storage.display()} is being written by another writer "
                    f"(host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('acquired')}). "
                    "Wait for it to finish; if it is dead on another host, its lock expires "
                    f"{holder.get('ttl', self.ttl):.0f}s after its last heartbeat, or reopen with "
                    "break_lock=True once you are sure."
                )
            log.warning("taking over the write lock of %s: %s", self.storage.display(), reason)
            self.storage.delete(LOCK)
        raise DatasetLockedError(f"could not acquire the write lock of {self.storage.display()}")

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
            if holder.get("token") == self.token:
                self.storage.delete(LOCK)
        except (FileNotFoundError, ValueError):
            pass

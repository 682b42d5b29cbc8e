"""A writer process for the stale-writer tests (issue 41, finding 1): it holds a dataset's lock with a short ttl,
commits one unit, says so, then waits for a go file and commits more units. The test pauses it (SIGSTOP) past its
ttl in between, lets another writer take the dataset over, resumes it and creates the go file.

Usage: python -m tests.integration.stale_writer URI TTL READY_FILE GO_FILE [close]
(``close``: after the go file it only closes, committing nothing more: finding F3 of the attack on round 3.)
Exit status 3 and the error on stderr when it finds that it lost the dataset (the expected end); 0 otherwise.
"""

from __future__ import annotations

import os
import sys
import time

import shards
from shards.errors import LockLostError
from tests.helpers import HOOKS, unit_columns


def main() -> None:
    uri, ttl, ready, go = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    w = shards.create_dataset(uri, HOOKS, mode="append", lock_ttl=ttl, commit_interval=0)
    w.write_unit(50, unit_columns(50, 3))
    with open(ready, "w") as f:
        f.write(str(w.manifest.version))
    if sys.argv[5:] == ["close"]:
        # The heartbeat thread can notice the takeover first and mark the writer lost (then close raises for that
        # reason): stopped here, the test is the case the attacker hit, where close() itself has to look.
        w.lock._stop.set()
        w.lock._thread.join()
    while not os.path.exists(go):
        time.sleep(0.02)
    try:
        for u in (51, 52) if sys.argv[5:] != ["close"] else ():
            w.write_unit(u, unit_columns(u, 3))
        w.close()
    except LockLostError as exc:
        print(f"LOST: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()

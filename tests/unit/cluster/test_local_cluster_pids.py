"""A stale ``cluster.json`` whose process ids now belong to unrelated processes (issue 24, item 4): `cluster
status` says no node is alive and exits 1, `cluster down` signals none of them, `cluster up` is not refused. Each
failed before: the reused pid counted as a node, `status` exited 0, and `down` killed the unrelated process."""

from __future__ import annotations

import json
import subprocess
import sys

from cluster.cli import main
from cluster.local import LocalCluster


def test_a_reused_pid_is_never_taken_for_a_node(tmp_path, capsys):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        state = tmp_path / "cluster"
        state.mkdir()
        stale = LocalCluster(address="127.0.0.1:1", dashboard="http://127.0.0.1:1", temp_dir=str(tmp_path / "gone"),
                             pids=[bystander.pid])
        (state / "cluster.json").write_text(json.dumps(stale.__dict__))
        assert stale.live_nodes() == []
        assert main(["cluster", "status", "--dir", str(state)]) == 1
        assert json.loads(capsys.readouterr().out)["node_processes_alive"] == 0
        assert main(["cluster", "down", "--dir", str(state)]) == 0
        assert bystander.poll() is None  # still running: never signalled
        assert not (state / "cluster.json").exists()
    finally:
        bystander.kill()
        bystander.wait()

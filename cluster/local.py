"""``actlake cluster up|down|status``: a local multi-node Ray cluster on loopback, for trying jobs as they run on a
real cluster (a head and workers as separate ``ray start`` processes, each its own node).

Each node is one ``ray start --block`` process started in a process group of its own; ``down`` stops those
groups (SIGTERM, then SIGKILL) and then every process left that runs under the cluster's temporary folder, so no
process outlives it. Nothing else on the machine is touched (unlike ``ray stop``, which stops every Ray).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simple_parsing import field as sp_field

from shards.errors import ActlakeError
from shards.lock import command_line, pid_alive

log = logging.getLogger("actlake.cluster")


class ClusterError(ActlakeError, RuntimeError):
    """The local cluster could not be started, or there is none."""


#: every node of the loopback cluster: multi-node allowed ("0" forbids it), and no token authentication (a
#: `ray start --head` defaults to tokens while a joining `ray start` does not; every listener is on 127.0.0.1)
NODE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled"}


def default_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".actlake", "cluster")


@dataclass
class ClusterUpConfig:
    """Start a local Ray cluster of --nodes nodes on loopback (a head and workers, separate processes)."""

    nodes: int = 2
    """Nodes in all, the head included."""

    cpus: int = 1
    """CPUs each node offers."""

    memory_gb: float = 2.0
    """Memory each node offers to tasks and actors (GiB)."""

    dir: str = sp_field(default_factory=default_dir)
    """Where the cluster's state (addresses, process ids) is kept."""


@dataclass
class ClusterDirConfig:
    dir: str = sp_field(default_factory=default_dir)
    """Where the cluster's state is kept (as given to `cluster up`)."""


@dataclass
class LocalCluster:
    """What ``cluster up`` started (``cluster.json``)."""

    address: str  #: the GCS address, for `--address` and RAY_ADDRESS
    dashboard: str  #: the job server, for `actlake submit --address`
    temp_dir: str
    pids: list[int] = field(default_factory=list)  #: the `ray start --block` process of each node

    def node_alive(self, pid: int) -> bool:
        """Whether ``pid`` is a live ``ray start`` of this cluster: a pid recorded in a stale ``cluster.json`` may
        belong to an unrelated process by now, which is never signalled nor counted."""
        if not pid_alive(pid):
            return False
        cmd = command_line(pid)
        return "ray" in cmd and " start" in cmd and (self.temp_dir in cmd or self.address in cmd)

    def live_nodes(self) -> list[int]:
        return [p for p in self.pids if self.node_alive(p)]

    @classmethod
    def load(cls, d: str) -> LocalCluster:
        try:
            return cls(**json.loads((Path(d) / "cluster.json").read_text()))
        except FileNotFoundError:
            raise ClusterError(f"no local cluster recorded in {d}; start one with `actlake cluster up`") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else "ray"


def _start(args: list[str], log_path: Path) -> int:
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([_ray(), "start", "--block", *args], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **NODE_ENV})
    return proc.pid


def _dashboard_up(url: str) -> bool:
    """The head's HTTP server answers (401 counts: Ray's token authentication is on by default)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _alive_nodes(url: str) -> int | None:
    """Nodes the cluster counts alive, through Ray's state API (which carries the auth token)."""
    try:
        from ray.util.state import list_nodes

        return sum(n.state == "ALIVE" for n in list_nodes(address=url, timeout=10, raise_on_missing_output=False))
    except Exception:  # noqa: BLE001 - not up yet, or unreachable: the caller retries or reports
        return None


def up(cfg: ClusterUpConfig) -> LocalCluster:
    """Start the head and ``nodes - 1`` workers and wait until all have joined."""
    state = Path(cfg.dir)
    if (state / "cluster.json").exists():
        old = LocalCluster.load(cfg.dir)
        if old.live_nodes():
            raise ClusterError(f"a local cluster is already up ({old.dashboard}); `actlake cluster down` stops it")
    if cfg.nodes < 1 or cfg.cpus < 1:
        raise ClusterError("--nodes and --cpus must be at least 1")
    state.mkdir(parents=True, exist_ok=True)
    temp = tempfile.mkdtemp(prefix="alc", dir="/tmp")  # Ray's socket paths must stay short
    port, dash = _free_port(), _free_port()
    common = ["--num-cpus", str(cfg.cpus), "--memory", str(int(cfg.memory_gb * 2**30)),
              "--object-store-memory", str(200 << 20), "--node-ip-address", "127.0.0.1",
              "--dashboard-agent-listen-port", str(_free_port())]
    cluster = LocalCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp)
    cluster.pids.append(_start(["--head", "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port",
                                str(dash), "--include-dashboard", "true", "--temp-dir", temp, *common],
                               state / "head.log"))
    (state / "cluster.json").write_text(json.dumps(asdict(cluster)))
    _wait(lambda: _dashboard_up(cluster.dashboard), 90, "the head's dashboard", cluster, cfg.dir)
    for i in range(1, cfg.nodes):
        cluster.pids.append(_start(["--address", cluster.address, *common], state / f"worker-{i}.log"))
        (state / "cluster.json").write_text(json.dumps(asdict(cluster)))
    _wait(lambda: (_alive_nodes(cluster.dashboard) or 0) >= cfg.nodes, 120, f"{cfg.nodes} nodes", cluster, cfg.dir)
    log.info("local cluster up: %d nodes, address %s, jobs at %s", cfg.nodes, cluster.address, cluster.dashboard)
    return cluster


def _wait(ready, timeout: float, what: str, cluster: LocalCluster, d: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if len(cluster.live_nodes()) < len(cluster.pids):
            break
        time.sleep(0.5)
    down(ClusterDirConfig(d))
    raise ClusterError(f"the local cluster did not come up ({what} not ready); its logs are in {d}")


def cluster_processes(temp_dir: str) -> list[int]:
    """Processes whose command line names the cluster's temporary folder (raylets, GCS, workers, agents)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if temp_dir.encode() in cmd and pid_alive(int(entry)):
            out.append(int(entry))
    return out


def down(cfg: ClusterDirConfig) -> dict:
    """Stop every process of the local cluster; what was stopped."""
    cluster = LocalCluster.load(cfg.dir)
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        targets = cluster.live_nodes() + cluster_processes(cluster.temp_dir)
        for pid in targets:
            for kill in (os.killpg, os.kill):  # its process group (a node), else the process alone
                try:
                    kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (cluster.live_nodes() or cluster_processes(cluster.temp_dir)):
            time.sleep(0.2)
    left = cluster.live_nodes() + cluster_processes(cluster.temp_dir)
    if left:
        raise ClusterError(f"processes {left} of the local cluster did not stop; kill them by hand")
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    (Path(cfg.dir) / "cluster.json").unlink()
    return {"stopped": len(cluster.pids), "address": cluster.address}


def status(cfg: ClusterDirConfig) -> dict:
    cluster = LocalCluster.load(cfg.dir)
    alive = cluster.live_nodes()
    return {"address": cluster.address, "dashboard": cluster.dashboard, "nodes_started": len(cluster.pids),
            "node_processes_alive": len(alive), "nodes_alive": _alive_nodes(cluster.dashboard)}


def cmd_up(cfg: ClusterUpConfig) -> int:
    c = up(cfg)
    print(json.dumps({"address": c.address, "dashboard": c.dashboard, "nodes": cfg.nodes}))
    print(f"submit jobs with: actlake submit JOB.yaml --address {c.dashboard}   (or RAY_ADDRESS={c.address})")
    return 0


def cmd_down(cfg: ClusterDirConfig) -> int:
    print(json.dumps(down(cfg)))
    return 0


def cmd_status(cfg: ClusterDirConfig) -> int:
    s = status(cfg)
    print(json.dumps(s))
    healthy = s["node_processes_alive"] == s["nodes_started"] and s["nodes_alive"] == s["nodes_started"]
    return 0 if healthy else 1

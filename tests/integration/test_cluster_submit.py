"""A two-node local Ray cluster (ray.cluster_utils.Cluster, separate processes) runs a job submitted with
`actlake submit` end to end into the S3 server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile

import pytest

import shards
from cluster import jobs
from cluster.cli import main
from shards.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster(s3_endpoint, monkeypatch):
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # Ray's socket paths must stay short
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)
    # its own temp dir, apart from the session's local Ray (ray_current_cluster lives there)
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # the job's `python` must be the one with actlake installed, as on a real cluster's nodes
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    # free ports, not Ray's fixed defaults (8265, 52365), which the session's local Ray may already hold
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1", "temp_dir": tmp,
        "dashboard_port": _free_port(), "dashboard_agent_listen_port": _free_port(),
        "object_store_memory": 200 << 20, "memory": 3 << 30})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=200 << 20, memory=3 << 30,
                         dashboard_agent_listen_port=_free_port())
        cluster.wait_for_nodes()
        url = cluster.head_node.address_info["webui_url"]
        yield f"http://{url}"
    finally:
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_submit_to_two_node_cluster_writes_to_s3(two_node_cluster, s3_bucket, s3_endpoint, tmp_path, capsys):
    uri = f"{s3_bucket}/acts/submitted"
    job = tmp_path / "job.yaml"
    job.write_text(f"data: builtin:concepts?n=40\nhooks: resid.1\nunit_size: 10\nworkers: 2\n"
                   f"threads_per_worker: 1\nout: {uri}\nendpoint_url: {s3_endpoint}\n")
    assert main(["submit", str(job), "--address", two_node_cluster, "--wait"]) == 0
    out = capsys.readouterr().out
    job_id = out.splitlines()[0].strip()
    assert jobs.status(two_node_cluster, job_id) == "SUCCEEDED"
    assert "already committed (skipped)" in jobs.logs(two_node_cluster, job_id)
    ds = shards.open_dataset(uri)
    assert len(ds.units) == 4 and ds.num_rows > 40
    assert shards.verify_dataset(uri).ok
    assert main(["jobs", "status", job_id, "--address", two_node_cluster]) == 0
    # an analysis as a cluster job: probing, one Ray task per hook on the cluster's nodes
    probe_job = tmp_path / "probe.yaml"
    probe_job.write_text(f"data: {uri}\nhooks: resid.1\nlabel: label\nreg: '1'\nworkers: 2\nthreads: 1\n"
                         f"out: {s3_bucket}/runs/probe\nendpoint_url: {s3_endpoint}\n")
    capsys.readouterr()
    assert main(["submit", str(probe_job), "--command", "probe", "--address", two_node_cluster, "--wait"]) == 0
    summary = json.loads(Storage(f"{s3_bucket}/runs/probe").get_bytes("summary.json"))
    assert list(summary["hooks"]) == ["resid.1"] and summary["rows_used"] == ds.num_rows
    # layer statistics as a cluster job (one hook, a Ray task on the cluster)
    stats_job = tmp_path / "stats.yaml"
    stats_job.write_text(f"data: {uri}\nhooks: resid.1\nlabel: label\nworkers: 2\nthreads: 1\nsample: 200\n"
                         f"out: {s3_bucket}/runs/stats\nendpoint_url: {s3_endpoint}\n")
    assert main(["submit", str(stats_job), "--command", "stats", "--address", two_node_cluster, "--wait"]) == 0
    summary = json.loads(Storage(f"{s3_bucket}/runs/stats").get_bytes("summary.json"))
    assert summary["values"]["resid.1"]["rows"] == ds.num_rows and summary["values"]["resid.1"]["effective_rank"] > 1

"""A two-node local Ray cluster (`actlake cluster up`: separate `ray start` processes) runs jobs submitted with
`actlake submit` end to end into the S3 server, and `actlake cluster down` leaves no process behind."""

from __future__ import annotations

import json
import os
import sys

import pytest

import shards
from cluster import jobs, local
from cluster.cli import main
from shards.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def two_node_cluster(s3_endpoint, tmp_path, monkeypatch):
    """`actlake cluster up --nodes 2`: a head and a worker as separate `ray start` processes on loopback; at the
    end `actlake cluster down`, after which no process of the cluster is left."""
    # the job's `python` must be the one with actlake installed, as on a real cluster's nodes
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    d = str(tmp_path / "cluster")
    assert main(["cluster", "up", "--nodes", "2", "--cpus", "1", "--dir", d]) == 0
    info = json.loads((tmp_path / "cluster" / "cluster.json").read_text())
    try:
        assert local.status(local.ClusterDirConfig(d))["nodes_alive"] == 2
        yield info["dashboard"]
    finally:
        assert main(["cluster", "down", "--dir", d]) == 0
    assert local.cluster_processes(info["temp_dir"]) == [] and not os.path.exists(info["temp_dir"])
    assert main(["cluster", "status", "--dir", d]) == 2  # nothing recorded any more


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

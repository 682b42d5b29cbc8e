"""Schedules with an injected clock (due, missed slots, history), their lease, and the cluster templates."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from cluster.cli import main
from cluster.jobfiles import normalise, read_job_file_text
from cluster.kuberay import TEMPLATES, template
from cluster.schedules import Schedule, ScheduleError, ScheduleStore, due, parse_duration, parse_time, run_tick_now
from shards.errors import ConfigError


def t(s: str) -> datetime:
    return parse_time(s)


def test_every_slots_missed_ticks_collapse_and_cron():
    s = Schedule("s", "data: x", "2026-11-23T00:00:00Z", every_s=parse_duration("6h"))
    assert s.first_due() == t("2026-11-23T00:00:00Z")  # --every: due at once
    assert s.next_due(t("2026-11-23T00:00:05Z")) == t("2026-11-23T06:00:00Z")
    # a day with nothing running: the next tick is the next slot after now, not 4 catch-up ticks
    assert s.next_due(t("2026-11-24T01:00:00Z")) == t("2026-11-24T06:00:00Z")
    c = Schedule("c", "data: x", "2026-11-23T00:10:00Z", cron="0 */6 * * *")
    assert c.first_due() == t("2026-11-23T06:00:00Z")
    assert c.next_due(t("2026-11-23T13:59:00Z")) == t("2026-11-23T18:00:00Z")
    assert parse_duration("1h30m") == 5400
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("six hours")
    with pytest.raises(ScheduleError, match="exactly one"):
        Schedule("x", "", "2026-11-23T00:00:00Z")
    with pytest.raises(ScheduleError, match="not a cron"):
        Schedule("x", "", "2026-11-23T00:00:00Z", cron="every day")


def _add(tmp_path, name="crawl", every="6h", extra="") -> tuple[str, Path]:
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    job = tmp_path / f"{name}.yaml"
    job.write_text(f"data: {corpus}/*.jsonl\nout: {tmp_path / 'ds'}\nhooks: resid.1\n{extra}")
    state = str(tmp_path / "state")
    assert main(["schedule", "add", name, "--config", str(job), "--every", every, "--state", state]) == 0
    return state, corpus


def test_due_history_and_nothing_new_with_an_injected_clock(tmp_path, capsys):
    state, _corpus = _add(tmp_path)
    store = ScheduleStore(state)
    created = parse_time(store.get("crawl").created)
    assert due(store, created) == ["crawl"]
    # the glob matches nothing yet: the tick finds nothing new, writes nothing, and says so in the history
    assert main(["schedule", "run", "crawl", "--now", "2030-01-01T00:00:00Z", "--state", state]) == 0
    assert not (tmp_path / "ds").exists()
    status = store.status("crawl")
    assert status.last_status == "nothing new" and status.ticks == 1
    next_due = parse_time(status.next_due)
    assert next_due > t("2030-01-01T00:00:00Z") and (next_due - t("2030-01-01T00:00:00Z")).total_seconds() <= 6 * 3600
    assert due(store, t("2030-01-01T00:00:01Z")) == [] and due(store, next_due) == ["crawl"]
    assert main(["schedule", "serve", "--once", "--now", status.next_due, "--state", state]) == 0
    hist = store.history("crawl")
    assert [(h.run, h.status, h.inputs_found, h.units_written) for h in hist] == [(1, "nothing new", 0, 0),
                                                                                   (2, "nothing new", 0, 0)]
    assert hist[0].start == "2030-01-01T00:00:00Z" and hist[1].start == status.next_due
    capsys.readouterr()
    assert main(["schedule", "list", "--state", state]) == 0
    assert "crawl" in capsys.readouterr().out
    assert main(["schedule", "history", "crawl", "--json", "--state", state]) == 0
    assert [json.loads(x)["status"] for x in capsys.readouterr().out.splitlines()] == ["nothing new"] * 2
    assert main(["schedule", "remove", "crawl", "--state", state]) == 0
    assert store.names() == []


def test_a_second_tick_while_one_holds_the_lease_says_so_and_exits_0(tmp_path, capsys):
    state, _ = _add(tmp_path)
    store = ScheduleStore(state)
    lease = store.lease("crawl")
    lease.acquire()  # another tick (this live process) holds it
    try:
        assert run_tick_now(store, "crawl", t("2030-01-01T00:00:00Z")).status == "busy"
        assert main(["schedule", "run", "crawl", "--state", state]) == 0
        assert "another tick is running" in capsys.readouterr().out
    finally:
        lease.release()
    assert store.history("crawl") == []  # a busy tick records nothing


def test_bad_schedules_are_refused_before_anything_is_stored(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(f"data: {tmp_path}/*.jsonl\nout: s3://AKIAXXXXXXXX:supersecretvalue@bucket/acts\n")
    state = str(tmp_path / "state")
    assert main(["schedule", "add", "s", "--config", str(job), "--every", "1h", "--state", state]) == 2
    err = capsys.readouterr().err
    assert "credentials" in err and "supersecretvalue" not in err
    assert main(["schedule", "run", "nope", "--state", state]) == 2
    assert "no schedule 'nope'" in capsys.readouterr().err
    job.write_text(f"data: {tmp_path}/missing-table.jsonl\nout: {tmp_path / 'ds'}\n")
    assert main(["schedule", "add", "s", "--config", str(job), "--cron", "0 * * * *", "--state", state]) == 2
    assert not (tmp_path / "state").exists() or ScheduleStore(state).names() == []


# --- templates ----------------------------------------------------------------------------------
def test_launcher_template_matches_the_schema_inside_ray():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    doc = template("aws-gpu.yaml")
    jsonschema.validate(doc, schema)
    types = doc["available_node_types"]
    assert types[doc["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert any(nt["resources"].get("GPU", 0) >= 1 for nt in types.values())
    assert "AWS_SECRET_ACCESS_KEY" not in (TEMPLATES / "aws-gpu.yaml").read_text()
    bad = {**doc, "provider": {**doc["provider"], "type": 7}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _check_cluster_spec(spec: dict) -> None:
    """The fields KubeRay requires of a RayCluster spec, GPUs on workers, credentials only from secrets."""
    assert "rayStartParams" in spec["headGroupSpec"]
    for w in spec.get("workerGroupSpecs", []):
        assert {"groupName", "rayStartParams", "template"} <= set(w) and w["minReplicas"] <= w["maxReplicas"]
        assert any("nvidia.com/gpu" in c["resources"]["limits"] for c in w["template"]["spec"]["containers"])
    for c in _containers(spec):
        assert c["image"] and c["name"]
        env = {e["name"]: e for e in c.get("env", [])}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if key in env:
                assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["key"] == key


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob-extract.yaml", "rayjob-sae.yaml",
                                  "raycronjob-tick.yaml", "cronjob-tick.yaml"])
def test_kuberay_manifests_have_what_kuberay_requires(name):
    from analysis.registry import load_analysis
    from ingest.config import ExtractConfig

    doc = template(f"kuberay/{name}")
    assert doc["apiVersion"] in ("ray.io/v1", "batch/v1") and doc["metadata"]["name"]
    kind = doc["kind"]
    if kind == "RayCluster":
        _check_cluster_spec(doc["spec"])
    elif kind in ("RayJob", "RayCronJob"):
        job = doc["spec"] if kind == "RayJob" else doc["spec"]["jobTemplate"]
        if kind == "RayCronJob":
            assert len(doc["spec"]["schedule"].split()) == 5
        assert job["entrypoint"].startswith("actlake ") and job["shutdownAfterJobFinishes"] is True
        _check_cluster_spec(job["rayClusterSpec"])
        if "runtimeEnvYAML" in job:  # the job file each RayJob ships parses as its command's options
            text = yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]["ACTLAKE_JOB_YAML"]
            cls = ExtractConfig if " extract " in job["entrypoint"] else load_analysis("sae train").CONFIG
            cls(**normalise(read_job_file_text(text), cls, "", name))
    else:
        assert doc["spec"]["concurrencyPolicy"] == "Forbid"
        assert "schedule" in doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]


def test_export_fills_in_the_schedule(tmp_path, capsys):
    state, _ = _add(tmp_path, every="6h")
    capsys.readouterr()
    assert main(["schedule", "export", "crawl", "--kuberay", "--state", state, "--image", "reg/actlake:1",
                 "--secret", "s3creds", "--gpus", "1", "--workers", "2"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["kind"] == "RayCronJob" and doc["spec"]["schedule"] == "0 */6 * * *"
    job = doc["spec"]["jobTemplate"]
    assert job["entrypoint"] == f"actlake schedule run crawl --state {state}"
    _check_cluster_spec(job["rayClusterSpec"])
    assert {c["image"] for c in _containers(job["rayClusterSpec"])} == {"reg/actlake:1"}
    assert job["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2
    assert "s3creds" in json.dumps(doc)
    assert main(["schedule", "export", "crawl", "--cronjob", "--state", state]) == 0
    cron = yaml.safe_load(capsys.readouterr().out)
    assert cron["kind"] == "CronJob" and cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "command"][-4:] == ["run", "crawl", "--state", state]


def test_now_parses_iso_with_and_without_zone():
    assert parse_time("2026-11-23T06:00:00") == datetime(2026, 11, 23, 6, tzinfo=UTC)
    with pytest.raises(ConfigError, match="ISO"):
        parse_time("tomorrow")


def test_a_tick_reads_only_the_history_after_the_last_recorded_run(tmp_path):
    """Closing killed attempts reads the records numbered above the status's last run, not the whole history
    (a year of hourly ticks is 8,760 records: one GET each per tick on S3)."""
    from cluster.schedules import TickHistory

    state, _corpus = _add(tmp_path)
    store = ScheduleStore(state)
    assert main(["schedule", "run", "crawl", "--now", "2030-01-01T00:00:00Z", "--state", state]) == 0
    assert store.status("crawl").ticks == 1
    # run 1 says "running" but a later status was recorded (never read again: ticks closed it), run 3 an
    # interrupted attempt (its status recorded, still running), run 4 a killed one (no status)
    store.write_history("crawl", TickHistory(1, "2030-01-01T00:00:00Z"))
    (Path(state) / "crawl" / "history" / "000002.json").write_text("{not json")
    store.write_history("crawl", TickHistory(3, "2030-01-01T01:00:00Z"))
    store.write_history("crawl", TickHistory(4, "2030-01-01T02:00:00Z"))
    assert store.close_killed("crawl", after=3) == 4
    assert [h.status for h in store.history("crawl")] == ["running", "damaged", "killed", "killed"]
    assert main(["schedule", "run", "crawl", "--now", "2030-01-01T03:00:00Z", "--state", state]) == 0
    assert [(h.run, h.status) for h in store.history("crawl")][2:] == [(3, "killed"), (4, "killed"), (5, "nothing new")]

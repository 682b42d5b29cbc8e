"""Schedules attacked (issue 24, items 2, 5, 11 and 14): a name never reaches outside the state prefix and is a
Kubernetes name; an export never carries credentials of --state; a damaged state file is reported and the other
schedules keep ticking; killed tick attempts stay in the history. Each failed before: `schedule remove
../other-state/victim` deleted a sibling folder, `a:b` exported `actlake-tick-a:b`, the export wrote
`--state s3://KEY:SECRET@...` into the manifest, and one truncated status.json stopped `list` and `serve`."""

from __future__ import annotations

import pytest

from cluster.cli import main
from cluster.schedules import Schedule, ScheduleError, ScheduleStore, check_name


def _job(tmp_path, name="crawl"):
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    job = tmp_path / f"{name}.yaml"
    job.write_text(f"data: {corpus}/*.jsonl\nout: {tmp_path / 'ds'}\nhooks: resid.1\n")
    return job


def test_names_are_checked_by_every_subcommand(tmp_path, capsys):
    state, victim = tmp_path / "state", tmp_path / "other-state" / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("a user's file")
    (victim / "schedule.json").write_text("{}")
    job = _job(tmp_path)
    assert main(["schedule", "add", "crawl", "--config", str(job), "--every", "1h", "--state", str(state)]) == 0
    for argv in (["remove", "../other-state/victim"], ["history", "../other-state/victim"],
                 ["run", "../other-state/victim"], ["export", "../other-state/victim", "--cronjob"]):
        assert main(["schedule", *argv, "--state", str(state)]) == 2
        assert "schedule name '../other-state/victim'" in capsys.readouterr().err
    assert (victim / "keep.txt").read_text() == "a user's file"
    for bad in ("a:b", "Nightly", "crawl_1", "x" * 51, "-crawl", "crawl-"):
        with pytest.raises(ScheduleError, match="schedule name"):
            check_name(bad)
    with pytest.raises(ScheduleError, match="starts with '-'"):
        check_name("-crawl")
    assert main(["schedule", "add", "a:b", "--config", str(job), "--every", "1h", "--state", str(state)]) == 2
    assert check_name("nightly-crawl-2") == "nightly-crawl-2"


def test_export_leaves_credentials_of_the_state_out(s3_endpoint, s3_bucket, tmp_path, capsys):
    state = f"s3://AKIAFAKEKEY1234:SUPERSECRETVALUE99@{s3_bucket.removeprefix('s3://')}/state"
    store = ScheduleStore(state)
    store.add(Schedule(name="crawl", job=_job(tmp_path).read_text(), created="2026-11-23T00:00:00Z", every_s=3600))
    for kind in ("--kuberay", "--cronjob"):
        assert main(["schedule", "export", "crawl", kind, "--state", state]) == 0
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert "SUPERSECRETVALUE99" not in text and "AKIAFAKEKEY1234" not in text
        assert f"{s3_bucket}/state" in captured.out
        assert kind == "--cronjob" or "actlake-s3" in captured.out


def test_a_damaged_state_file_is_named_and_the_others_keep_ticking(tmp_path, capsys):
    state = tmp_path / "state"
    for name in ("good", "bad"):
        assert main(["schedule", "add", name, "--config", str(_job(tmp_path, name)), "--every", "1h",
                     "--state", str(state)]) == 0
    (state / "bad" / "status.json").write_text('{"next_due": "2026-')  # truncated
    assert main(["schedule", "list", "--state", str(state)]) == 0
    out = capsys.readouterr()
    assert "good" in out.out and "bad" in out.out and "damaged" in out.out + out.err
    assert main(["schedule", "serve", "--once", "--now", "2100-01-01T00:00:00Z", "--state", str(state)]) == 0
    assert [h.status for h in ScheduleStore(str(state)).history("good")] == ["nothing new"]
    (state / "bad" / "schedule.json").write_text("{")
    assert main(["schedule", "history", "bad", "--state", str(state)]) == 2
    assert "damaged" in capsys.readouterr().err
    assert main(["schedule", "list", "--state", str(state)]) == 0

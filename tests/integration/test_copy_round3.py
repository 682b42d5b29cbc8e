"""``actlake copy`` hardening, round three (issue 41): a destination that is the source under another spelling (or
inside it, or holding it) is refused before anything is written (finding 2); a copy killed before its source grew
resumes on the version it was planned on, and ``--version N`` of another version is refused saying which to choose
(finding 16). Real disks, moto's S3 server on loopback, a real copy process killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shards
from cluster.cli import build_parser
from cluster.share_commands import cmd_copy
from shards.errors import ConfigError
from shards.storage import Storage
from tests.helpers import HOOKS, unit_columns, write_dataset

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = {"label": "string", "score": "float64"}
SMALL = {"h": {"shape": [8], "dtype": "float16"}}


def _copy(src, dst, *flags):
    """The command's function itself (``main`` turns errors into exit code 2; these tests read the error)."""
    args = build_parser(["copy"]).parse_args(["copy", str(src), str(dst), *flags])
    return cmd_copy(args.cfg)


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: what must stay as it was."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_the_source_under_another_spelling_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_dataset(str(src), units=2, rows=10)
    (tmp_path / "link").symlink_to(src)
    before = _tree(src)
    monkeypatch.chdir(tmp_path)
    same = [f"{src}/.", f"{src}/../src", f"file://{src}", str(tmp_path / "link"), f"{src}/", "src", "./src/",
            "link/."]
    for dst in same:
        with pytest.raises(ConfigError, match="DST is SRC"):
            _copy(src, dst, "--overwrite")
    for dst in (f"{src}/data/sub", f"{src}/sub/../copy", "link/copy"):  # DST inside SRC
        with pytest.raises(ConfigError, match="lies inside SRC"):
            _copy(src, dst, "--overwrite")
    for dst in (str(tmp_path), ".", f"file://{tmp_path}"):  # DST holding SRC (--overwrite would delete it)
        with pytest.raises(ConfigError, match="holds SRC"):
            _copy(src, dst, "--overwrite")
    other = tmp_path / "other"
    write_dataset(str(other), units=1, rows=5, seed=3)
    with pytest.raises(ConfigError, match="lies inside the dataset"):  # inside another dataset
        _copy(src, f"{other}/data/x")
    assert _tree(src) == before  # not one byte written, not one folder made
    assert not (src / "data" / "sub").exists() and not (src / "copy").exists() and not (other / "data" / "x").exists()
    ds = shards.open_dataset(str(src))
    assert ds.num_rows == 20 and shards.verify_dataset(str(src)).ok


def test_the_source_under_another_key_spelling_on_s3_is_refused(s3_bucket):
    src = f"{s3_bucket}/acts/src"
    write_dataset(src, units=2, rows=10)
    store = Storage(f"{s3_bucket}/acts")
    before = sorted(store.find(""))
    version = shards.open_dataset(src).version
    for dst in (f"{src}/", f"{src}/.", f"{src}/x/..", f"{s3_bucket}/acts/../acts/src", f"s3a://{src[5:]}"):
        with pytest.raises(ConfigError, match="DST is SRC"):
            _copy(src, dst, "--overwrite")
    with pytest.raises(ConfigError, match="lies inside SRC"):
        _copy(src, f"{src}/data/sub", "--overwrite")
    with pytest.raises(ConfigError, match="holds SRC"):
        _copy(src, f"{s3_bucket}/acts/.", "--overwrite")
    assert sorted(store.find("")) == before
    assert shards.open_dataset(src).version == version and shards.verify_dataset(src).ok


def _kill_copy_midway(cmd: list[str], dst_store: Storage, log_path: Path, at_least: int) -> None:
    """Run the copy ``cmd`` as a real process and SIGKILL it once ``at_least`` units are committed."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None:
                if dst_store.exists("data") and len(dst_store.list("data")) >= at_least:  # files (but one committed)
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the copy ended first: " + log_path.read_text()[-2000:]
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_killed_copy_resumes_on_its_planned_version_after_the_source_grew(s3_bucket, tmp_path):
    src = str(tmp_path / "src")
    with shards.create_dataset(src, SMALL, COLUMNS) as w:
        for u in range(150):
            w.write_unit(u, unit_columns(u, 4, SMALL))
    planned = shards.open_dataset(src)
    dst = f"{s3_bucket}/copy"
    cmd = [sys.executable, "-m", "cluster.cli", "copy", src, dst, "--threads", "1"]
    _kill_copy_midway(cmd, Storage(dst), tmp_path / "copy.log", at_least=10)
    with shards.create_dataset(src, SMALL, COLUMNS, mode="append") as w:  # the source grows meanwhile
        for u in range(150, 160):
            w.write_unit(u, unit_columns(u, 4, SMALL))
    latest = shards.open_dataset(src).version
    assert latest > planned.version

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming it on version {planned.version}" in rerun.stderr
    assert f"--version {latest} --overwrite" in rerun.stderr  # and how to copy the newest instead
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["version"] == planned.version and summary["rows"] == 600
    out = shards.open_dataset(dst)
    meta = out.metadata_table(["example_id", "position"]).to_pandas()
    assert len(meta) == 600 and not meta.duplicated().any()  # every row of the planned version, exactly once
    assert out.manifest.provenance.derived_from.version == planned.version and shards.verify_dataset(dst).ok

    with pytest.raises(ConfigError, match=rf"copy of version {planned.version}.*--version {latest}.*Rerun without "
                                          rf"--version \(or with --version {planned.version}\).*--overwrite"):
        _copy(src, dst, "--version", str(latest))
    assert main_rc(["copy", src, dst, "--version", str(latest), "--overwrite"]) == 0
    assert shards.open_dataset(dst).num_rows == 640


def test_a_copy_whose_planned_version_was_vacuumed_says_to_overwrite(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    write_dataset(src, units=2, rows=10)
    first = _copy(src, dst)
    with shards.create_dataset(src, HOOKS, COLUMNS, mode="append") as w:  # the source grows
        w.write_unit(2, unit_columns(2, 10))
    assert main_rc(["vacuum", src, "--keep", "1"]) == 0
    with pytest.raises(ConfigError, match=rf"version {first.version}.*no longer keeps.*--overwrite"):
        _copy(src, dst)
    assert shards.open_dataset(dst).num_rows == 20  # untouched


def main_rc(argv: list[str]) -> int:
    """The command line's exit code for ``argv``."""
    from cluster.cli import main

    return main(argv)

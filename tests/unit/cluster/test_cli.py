"""The actlake command line on real datasets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cluster.cli import COMMANDS, main
from tests.helpers import write_dataset


def test_info_shows_hooks_rows_provenance_stats(tmp_path, capsys):
    ds = write_dataset(str(tmp_path / "ds"), units=2, rows=10,
                       provenance={"model": {"name": "all-MiniLM-L6-v2"}, "corpus": {"source": "x.jsonl"}})
    assert main(["info", ds.uri]) == 0
    out = capsys.readouterr().out
    assert "rows      20   units 2" in out
    assert "resid.1" in out and "[4, 3]" in out and "bfloat16" in out
    assert "all-MiniLM-L6-v2" in out and "x.jsonl" in out
    assert f"mean‖x‖ {ds.stats('resid.0').mean_norm:.4g}" in out
    assert main(["info", "--json", ds.uri]) == 0
    assert json.loads(capsys.readouterr().out)["num_rows"] == 20


def test_ls_finds_nested_datasets(tmp_path, capsys):
    write_dataset(str(tmp_path / "acts" / "a"), units=1, rows=3)
    write_dataset(str(tmp_path / "acts" / "team" / "b"), units=2, rows=3)
    assert main(["ls", str(tmp_path / "acts")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].split()[:3] == ["dataset", "model", "modality"]  # header, 2, total
    assert lines[1].split()[0] == "a" and lines[1].split()[3] == "3"  # rows
    assert lines[2].split()[0] == "team/b" and lines[2].split()[3] == "6"
    assert lines[3] == f"2 dataset(s) under {tmp_path / 'acts'}"


def test_errors_exit_2_with_message(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "info", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "no actlake dataset at" in r.stderr and "Traceback" not in r.stderr


def test_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "--help"], capture_output=True, text=True)
    for cmd in ("info", "verify", "ls", "demo"):
        assert cmd in r.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_prints_its_help(name, capsys):
    """Regression: a '%' in an option's docstring made argparse's --help crash (sae train, issue 14)."""
    with pytest.raises(SystemExit) as exc:
        main([*name.split(), "--help"])
    assert exc.value.code == 0 and "--" in capsys.readouterr().out


def test_job_files_flat_nested_sections_and_bad_keys(tmp_path, capsys):
    from cluster.cli import build_parser

    flat = tmp_path / "flat.yaml"
    flat.write_text("extract:\n  hooks: resid.1,embed\n  endpoint_url: http://127.0.0.1:9\n  workers: 3\n")
    argv = ["extract", f"--config={flat}", "--workers", "2"]
    cfg = build_parser(argv).parse_args(argv).cfg
    assert cfg.hooks == ["resid.1", "embed"] and cfg.storage.endpoint_url == "http://127.0.0.1:9"
    assert cfg.workers == 2  # the flag overrides the file
    nested = tmp_path / "nested.yaml"
    nested.write_text("storage:\n  region: eu-west-1\nk: '2,4'\n")
    argv = ["sae", "train", "--config", str(nested)]
    cfg = build_parser(argv).parse_args(argv).cfg
    assert cfg.storage.region == "eu-west-1" and cfg.k == [2, 4]
    bad = tmp_path / "bad.yaml"
    bad.write_text("hooks: resid.1\nworkerz: 2\n")
    assert main(["extract", "--config", str(bad)]) == 2
    assert "unknown option 'workerz'" in capsys.readouterr().err
    assert main(["extract", "--batch-size", "0"]) == 2
    assert "--batch-size must be positive" in capsys.readouterr().err

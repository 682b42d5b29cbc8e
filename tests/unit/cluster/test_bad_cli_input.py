"""Bad command-line input (issue 9, item 15): one clear error naming the problem, rc 2, no traceback, before
any work starts, and nothing left behind that looks like a result."""

from __future__ import annotations

import os

import pytest

from cluster.cli import main

LIST_YAML = "- model: x\n- data: y\n"
BROKEN_YAML = "extract:\n  model: [unclosed\n"


def _files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9 \xff"}\n')
    missing_field = tmp_path / "missing.jsonl"
    missing_field.write_text('{"text": "a"}\n{"txt": "b"}\n{"text": "c"}\n')
    (tmp_path / "list.yaml").write_text(LIST_YAML)
    (tmp_path / "broken.yaml").write_text(BROKEN_YAML)
    return bad, missing_field


CASES = [
    # (argv, words the error must contain)
    (["extract", "--compression", "gzip", "--out", "{out}"], ["compression", "gzip"]),
    (["extract", "--data", "builtin:concepts?n=abc", "--out", "{out}"], ["n=abc"]),
    (["extract", "--data", "{tmp}/bad.jsonl", "--out", "{out}"], ["bad.jsonl", "UTF-8"]),
    (["extract", "--data", "{tmp}/missing.jsonl", "--out", "{out}"], ["missing.jsonl", "row 1", "text"]),
    (["extract", "--config", "{tmp}/list.yaml"], ["list.yaml"]),
    (["extract", "--config", "{tmp}/broken.yaml"], ["broken.yaml", "YAML"]),
    (["extract", "--config", "{tmp}/nope.yaml"], ["nope.yaml", "No such file"]),
    (["extract", "--config"], ["--config"]),
    (["extract", "--max-examples", "-5", "--out", "{out}"], ["--max-examples"]),
    (["extract", "--workers", "0", "--out", "{out}"], ["workers"]),
    (["demo", "--rows-per-unit", "0", "--out", "{out}"], ["rows-per-unit"]),
    (["sae", "train", "--tokens", "abc", "--out", "{out}"], ["tokens", "abc"]),
    (["sae", "train", "--tokens", "0", "--out", "{out}"], ["tokens"]),
    (["sae", "train", "--lr", "-1", "--out", "{out}"], ["lr"]),
    (["sae", "train", "--workers", "0", "--out", "{out}"], ["workers"]),
    (["sae", "encode", "--sae", "{tmp}/MISSING", "--out", "{out}"], ["MISSING"]),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_bad_input_is_one_clear_error(tmp_path, capsys, argv, words):
    _files(tmp_path)
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, out=out) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors exit with 2 after printing usage
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not (out / "manifest.json").exists() and not (out / "run.json").exists()
    assert not out.exists() or os.listdir(out) == []

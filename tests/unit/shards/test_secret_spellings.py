"""Issue 41, findings 4, 5, 17-18 and 19 at the unit level: secret-named values in every spelling never reach a
record (``redact``, ``redact_argv``, run records, a card made from an older manifest); credentials in URIs whose
secret holds ``/`` or ``@``; control characters of a manifest escaped by every printer and in the card; a card
never replaces a dataset's own file nor a README.md that is not a card. The end-to-end runs are in
tests/integration/test_secrets_round3.py."""

from __future__ import annotations

import json
import logging

import pytest

import shards
from cluster.cli import main
from shards.errors import ConfigError
from shards.secrets import redact, redact_argv, redact_uri, split_credentials
from tests.helpers import write_dataset

SECRET = "Sek-Value-9876"


# --- finding 4: every spelling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    f"secret={SECRET}",                                                     # --storage-option secret=X
    f"--storage-option=token={SECRET}",                                     # one word, kept as given
    f"--dst-storage-option=password={SECRET}",
    f'client_kwargs={{"aws_access_key_id": "AK", "aws_secret_access_key": "{SECRET}"}}',  # a JSON value
    f'headers={{"Authorization": "Bearer {SECRET}"}}',
    f"client_kwargs={{'aws_session_token': '{SECRET}'}}",                   # YAML flow style (single quotes)
    f'config_kwargs={{"a": {{"b": [{{"api_key": "{SECRET}"}}]}}}}',        # any depth
    f'headers={{"Authorization": "Bearer {SECRET}", "X": ',                 # a literal that does not parse
])
def test_redact_removes_a_secret_named_value_in_every_spelling(value):
    config = {"storage": {"storage_option": [value, "requester_pays=true"]}, "hooks": ["resid.3"]}
    clean = redact(config)
    assert SECRET not in json.dumps(clean)
    assert clean["storage"]["storage_option"][1] == "requester_pays=true" and clean["hooks"] == ["resid.3"]
    assert redact(clean) == clean  # idempotent: a stored record compares equal to a fresh one redacted


def test_a_command_line_loses_every_secret_whatever_the_spelling():
    argv = ["copy", "SRC", "DST", f"--storage-option=secret={SECRET}1", "--storage-option", f"token={SECRET}2",
            f"--dst-storage-option=password={SECRET}3", "--storage-option",
            f'client_kwargs={{"aws_secret_access_key": "{SECRET}4"}}', f'--storage-option=headers={{"Authorization": '
            f'"Bearer {SECRET}5"}}', "--hf-token", f"{SECRET}6", f"--hf-token={SECRET}7", "--card-citation",
            f"see {SECRET}1", "--hooks", "resid.3"]
    words = redact_argv(argv)
    assert not any(SECRET in w for w in words), words
    assert words[:3] == ["copy", "SRC", "DST"] and words[-2:] == ["--hooks", "resid.3"]
    assert "--storage-option=secret=***" in words and "token=***" in words


def test_a_submitted_job_file_ships_no_secret_and_no_mask_in_a_json_value():
    import yaml

    from cluster.jobs import shippable_job_text

    job = {"data": "builtin:concepts", "storage_option": [
        f'client_kwargs={{"aws_access_key_id": "AK", "aws_secret_access_key": "{SECRET}"}}', "requester_pays=true"]}
    shipped = shippable_job_text(yaml.safe_dump(job))
    assert SECRET not in shipped and "***" not in shipped  # a mask would be sent as if it were the secret
    assert yaml.safe_load(shipped)["storage_option"] == ["requester_pays=true"]


def test_a_card_cleans_a_command_line_an_older_actlake_recorded(tmp_path):
    from shards.card import render_card

    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=2)
    m = shards.open_dataset(uri).manifest
    m.provenance.details["command_line"] = (f"actlake copy a b --storage-option=token={SECRET} --storage-option "
                                            f"'headers={{\"Authorization\": \"Bearer {SECRET}\"}}'")
    text = render_card(m, uri)
    assert SECRET not in text and "--storage-option=token=***" in text


def test_run_json_keeps_no_secret_in_its_settings(tmp_path):
    from analysis.common.rundir import RunDir, RunRecord
    from shards.storage import Storage

    settings = {"hooks": ["h"], "extra": {"storage_option": [f"token={SECRET}"]}, "dataset_version": 1}
    config = {"storage": {"storage_option": [f'client_kwargs={{"aws_secret_access_key": "{SECRET}"}}']}}
    rundir = RunDir(Storage(str(tmp_path / "run")), command="stats")
    rundir.start(RunRecord(fingerprint="f", settings=settings, config=config))
    assert SECRET not in (tmp_path / "run" / "run.json").read_text()
    assert rundir.unfinished_version(settings) == 1  # the stored (redacted) settings still match the fresh ones


# --- finding 5: credentials in a URI -------------------------------------------------------------------------------
@pytest.mark.parametrize("uri, clean, creds", [
    ("s3://AKIA:wJal/rXU+q@bkt/ds", "s3://bkt/ds", {"key": "AKIA", "secret": "wJal/rXU+q"}),  # '/' in the secret
    ("s3://AKIA:wJa@lrXU@bkt/ds", "s3://bkt/ds", {"key": "AKIA", "secret": "wJa@lrXU"}),  # an unencoded '@'
    ("s3://AKIA:a%2Fb%40c@bkt/ds", "s3://bkt/ds", {"key": "AKIA", "secret": "a/b@c"}),  # percent-encoded
    ("s3://bkt/user@example.org/ds", "s3://bkt/user@example.org/ds", {}),  # an '@' in a path is a path
    ("https://u:p@ss@host:8443/ds", "https://host:8443/ds", {"http_user": "u", "http_password": "p@ss"}),
    ("https://u:pa/ss@host/ds", "https://host/ds", {"http_user": "u", "http_password": "pa/ss"}),
    ("https://host:8443/a@b/ds", "https://host:8443/a@b/ds", {}),
])
def test_credentials_are_taken_out_of_a_uri_whatever_the_secret_holds(uri, clean, creds):
    assert split_credentials(uri) == (clean, creds)
    assert redact_uri(f"read failed for {uri}/manifest.json: boom") == f"read failed for {clean}/manifest.json: boom"


@pytest.mark.parametrize("uri", ["s3://AKIA:wJal/rXU@bkt/a@b/ds", "s3://AKIA:wJal@bkt/dir@2/ds"])
def test_a_uri_whose_credentials_cannot_be_told_from_its_path_is_refused_showing_neither(uri):
    with pytest.raises(ConfigError, match="Percent-encode") as refused:
        split_credentials(uri)
    assert "wJal" not in str(refused.value) and "rXU" not in str(refused.value)
    assert "wJal" not in redact_uri(f"error at {uri}")  # shown anyway (a message): everything up to the last '@'


def test_a_refused_uri_is_an_error_before_any_work(tmp_path, capsys):
    assert main(["copy", "s3://AKIA:wJal/rXU@bkt/a@b/ds", str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err
    assert "Percent-encode" in err and "wJal" not in err and not (tmp_path / "dst").exists()


# --- finding 19: control characters of a manifest ------------------------------------------------------------------
EVIL = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202ename\nFAKE LINE"


def _no_controls(text: str) -> None:
    bad = [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f or c == "\u202e"]
    assert not bad, bad


def test_every_printer_escapes_control_characters_of_a_manifest(tmp_path, capsys):
    uri = str(tmp_path / "lab" / "ds")
    write_dataset(uri, units=1, rows=4, provenance={"model": {"name": EVIL, "revision": "r\x07"}})
    for argv in (["ls", str(tmp_path / "lab")], ["info", uri], ["card", uri, "--print"], ["versions", uri],
                 ["verify", uri]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        _no_controls(out)
        assert not any(line.startswith("FAKE LINE") for line in out.splitlines())
        if argv[0] in ("ls", "info", "card"):  # the ones that show the model's name: shown, escaped
            assert "evil" in out and ("\\x1b]0;pwned\\x07" in out or "\\u001b]0;pwned\\u0007" in out)
    card = (tmp_path / "lab" / "ds" / "README.md").read_text()
    _no_controls(card)
    assert "\\x1b[2J" in card and not any(line.startswith("FAKE LINE") for line in card.splitlines())


# --- findings 17-18: a card replaces only a card ------------------------------------------------------------------
@pytest.mark.parametrize("target", ["manifest.json", "_log/v000000001.json", "_checkpoints/x.json",
                                    "_commits/unit-000000.json", "data/unit-000000.parquet", "stats/x.npz", "",
                                    "_lock.json", "../ds/./manifest.json"])
def test_card_out_never_replaces_a_dataset_file(tmp_path, capsys, target):
    ds = tmp_path / "ds"
    write_dataset(str(ds), units=1, rows=4)
    before = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    out = ds / target if target else ds
    assert main(["card", str(ds), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "card never replaces" in err and "dataset" in err
    assert {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()} == before
    assert shards.verify_dataset(str(ds)).ok


def test_card_out_takes_a_new_file_or_a_card_but_not_someone_elses_file(tmp_path, capsys):
    ds = tmp_path / "ds"
    write_dataset(str(ds), units=1, rows=4)
    assert main(["card", str(ds), "--out", str(tmp_path / "card.md")]) == 0
    assert main(["card", str(ds), "--out", str(tmp_path / "card.md")]) == 0  # a card replaces a card
    assert main(["card", str(ds), "--out", str(ds / "README.md")]) == 0  # the dataset's own card
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    assert main(["card", str(ds), "--out", str(notes)]) == 2
    assert "replaces only a card" in capsys.readouterr().err and notes.read_text() == "my notes\n"
    assert main(["card", str(ds), "--out", str(tmp_path)]) == 2  # a folder
    assert "is a folder" in capsys.readouterr().err


def test_someone_elses_readme_in_a_destination_is_left_alone(tmp_path, caplog, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_dataset(str(src), units=2, rows=4)
    dst.mkdir()
    (dst / "README.md").write_text("notes\n")
    caplog.set_level(logging.WARNING, logger="actlake")
    rc = main(["copy", str(src), str(dst)])
    assert (dst / "README.md").read_text() == "notes\n"
    if rc == 0:  # (a copy may also refuse a DST that holds files: either way the notes stay)
        assert f"{dst / 'README.md'} is not a dataset card" in caplog.text and "left alone" in caplog.text
    # a writer from Python leaves it alone too, and says so
    caplog.clear()
    other = tmp_path / "other"
    other.mkdir()
    (other / "README.md").write_text("# My project\n")
    write_dataset(str(other), units=1, rows=4)
    assert (other / "README.md").read_text() == "# My project\n" and "left alone" in caplog.text
    # and `actlake card` refuses to replace it, saying what to do
    capsys.readouterr()
    assert main(["card", str(other)]) == 2
    err = capsys.readouterr().err
    assert "README.md is not a dataset card" in err and "--out FILE" in err
    assert (other / "README.md").read_text() == "# My project\n"


def test_a_card_written_before_the_marker_is_still_known_and_replaced(tmp_path):
    from shards.card import MARKER, is_card

    ds = tmp_path / "ds"
    write_dataset(str(ds), units=1, rows=4)
    card = ds / "README.md"
    old = card.read_text().replace(MARKER + "\n", "")  # as an earlier actlake wrote it
    assert is_card(old) and not is_card("---\ntags: [actlake]\n---\n# my notes\n") and not is_card("notes\n")
    card.write_text(old)
    assert main(["card", str(ds), "--card-license", "mit"]) == 0
    assert card.read_text().startswith(f"---\n{MARKER}\n") and "license: mit" in card.read_text()

"""Secrets and copy's own-source check, round four (attack on issue 41's fixes): credentials in a URI's query
string (F0), camelCase secret names (F1), repeated ``--storage-option`` flags (F11), secret assignments inside
free text and the card's citation (F12), argument errors echoing secrets (F22), the S3 endpoint under another
spelling (F2). The end-to-end runs are in tests/integration/test_secrets_round4.py."""

from __future__ import annotations

import json

import pytest

from cluster.cli import build_parser, main
from shards.errors import ConfigError
from shards.secrets import is_secret_key, redact, redact_argv, redact_message, redact_text, redact_uri
from shards.storage import Storage, StorageOptions

SECRET = "Sek-Round4-9876"
PRESIGNED = (f"https://bkt.s3.amazonaws.com/c.jsonl?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F{SECRET}1"
             f"&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
             f"&X-Amz-Security-Token={SECRET}2&X-Amz-Signature={SECRET}3")


# --- F0: a URI's query string -------------------------------------------------------------------------------------
@pytest.mark.parametrize("uri", [
    PRESIGNED,
    f"http://127.0.0.1:5305/ds/c.jsonl?token={SECRET}&X-Amz-Signature={SECRET}&X-Amz-Security-Token={SECRET}",
    f"https://acct.blob.core.windows.net/c/f.jsonl?sv=2022-11-02&se=2030-01-01&sp=r&sig={SECRET}",
    f"https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4&X-Goog-Credential={SECRET}&X-Goog-Signature={SECRET}",
    f"https://api.example.com/c.jsonl?apiKey={SECRET}#part",
    f"https://h/login?next=https://x/y?access_token={SECRET}",
    f"https://user:{SECRET}@h/c.jsonl?token={SECRET}",
])
def test_secret_query_parameters_are_masked_in_every_uri(uri):
    clean = redact_uri(uri)
    assert SECRET not in clean and "***" in clean
    assert redact_uri(clean) == clean  # idempotent: a stored URI compares equal to a fresh one cleaned
    config = {"data": uri, "corpus": {"source": uri}, "storage": {"storage_option": [f"endpoint_url={uri}"]}}
    assert SECRET not in json.dumps(redact(config))  # the manifest's config, job identity and provenance
    assert not any(SECRET in w for w in redact_argv(["extract", "--data", uri, f"--data={uri}"]))
    assert SECRET not in redact_message(f"cannot open {uri!r}: 403 Forbidden")


def test_the_rest_of_a_uri_is_kept():
    assert redact_uri(PRESIGNED).startswith("https://bkt.s3.amazonaws.com/c.jsonl?X-Amz-Algorithm=AWS4-HMAC-SHA256&")
    assert "X-Amz-Expires=3600&X-Amz-SignedHeaders=host" in redact_uri(PRESIGNED)
    for plain in ("https://h/c.jsonl?split=train&n=10", "builtin:concepts?n=10", "s3://b/x?versionId=3", "a?b"):
        assert redact_uri(plain) == plain


def test_a_job_with_a_presigned_corpus_url_ships_its_data_masked_not_dropped():
    """Dropped, the job would read the option's default corpus instead, silently; masked, the server refuses it."""
    import yaml

    from cluster.jobs import shippable_job_text

    shipped = shippable_job_text(yaml.safe_dump({"data": f"https://h/c.jsonl?token={SECRET}&split=a"}))
    assert SECRET not in shipped and yaml.safe_load(shipped)["data"] == "https://h/c.jsonl?token=***&split=a"


@pytest.mark.parametrize("job", [
    "data: https://h/c.jsonl?X-Amz-Signature={secret}\nout: {out}\n",
    "data: builtin:concepts\nout: {out}\nstorage_option:\n"
    "  - 's3_additional_kwargs={{\"SSECustomerKey\": \"{secret}\"}}'\n",
])
def test_a_schedule_refuses_a_job_holding_a_presigned_url_or_a_camel_case_secret(job, tmp_path, capsys):
    """Schedule state is shared: the job text is stored as given, so credentials in it are refused (F0, F1)."""
    path = tmp_path / "job.yaml"
    path.write_text(job.format(secret=SECRET, out=tmp_path / "ds"))
    state = tmp_path / "state"
    assert main(["schedule", "add", "s", "--config", str(path), "--every", "1h", "--state", str(state)]) == 2
    err = capsys.readouterr().err
    assert "credentials" in err and SECRET not in err
    assert not any(SECRET.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != path)


# --- F1: camelCase and run-together secret names ------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "SSECustomerKey", "secretAccessKey", "SecretAccessKey", "sessionToken", "accessToken", "clientSecret",
    "refreshToken", "authToken", "privateKey", "secretKey", "apitoken", "apiKey", "APIKEY", "passwords", "pwd",
    "jwt", "Password", "dbPassword", "X-Amz-Security-Token", "ConnectionString", "aws_secret_access_key", "hf-token",
])
def test_secret_names_in_any_spelling(name):
    assert is_secret_key(name)
    assert SECRET not in json.dumps(redact({"s3_additional_kwargs": {name: SECRET}}))
    assert SECRET not in redact_text(f's3_additional_kwargs={{"{name}": "{SECRET}"}}')


@pytest.mark.parametrize("name", ["tokenizer", "monkey", "max_tokens", "max_new_tokens", "SSECustomerAlgorithm",
                                  "requester_pays", "X-Amz-Date", "X-Amz-SignedHeaders", "keywords", "text_field"])
def test_names_that_hold_no_secret(name):
    assert not is_secret_key(name)


def test_an_sse_c_key_is_kept_out_of_a_command_line_and_a_shipped_job():
    import yaml

    from cluster.jobs import shippable_job_text

    option = f's3_additional_kwargs={{"SSECustomerKey": "{SECRET}", "SSECustomerAlgorithm": "AES256"}}'
    words = redact_argv(["copy", "a", "s3://b/c", f"--dst-storage-option={option}"])
    assert SECRET not in " ".join(words) and "AES256" in words[-1]
    shipped = shippable_job_text(yaml.safe_dump({"data": "builtin:concepts", "storage_option": [option]}))
    assert SECRET not in shipped


# --- F12: secret assignments inside free text -----------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    f'config_kwargs={{"user_agent_extra": "export AWS_SECRET_ACCESS_KEY={SECRET}"}}',
    f"export AWS_SECRET_ACCESS_KEY={SECRET} && run",
    f"see HF_TOKEN='{SECRET}' here",
    f"AWS_SECRET_ACCESS_KEY={SECRET}",
    f"--card-citation=export apiKey={SECRET}",
])
def test_secret_assignments_inside_a_value_are_masked(value):
    clean = redact({"storage_option": [value], "card": {"citation": value}})
    assert SECRET not in json.dumps(clean)
    assert redact(clean) == clean
    assert not any(SECRET in w for w in redact_argv(["x", value, f"again {SECRET}"]))  # and wherever else it is


def test_free_text_keeps_what_is_no_secret():
    text = "@misc{a2024, title={Acts}, note={key=VALUE, see https://h/x?a=1&b=2}, year=2024}"
    assert redact_text(text) == text
    assert redact_text("mode=fast tokenizer=gpt2 HF_TOKEN=abcd1234") == "mode=fast tokenizer=gpt2 HF_TOKEN=***"


def test_the_card_shows_the_citation_as_recorded(tmp_path):
    import shards
    from shards.card import CardOptions, render_card
    from tests.helpers import write_dataset

    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=2)
    m = shards.open_dataset(uri).manifest
    citation = f"Cite us. (export AWS_SECRET_ACCESS_KEY={SECRET})"
    m.provenance.details["card"] = {"citation": citation}
    for text in (render_card(m, uri), render_card(m, uri, CardOptions(card_citation=citation))):
        assert SECRET not in text and "Cite us. (export AWS_SECRET_ACCESS_KEY=***" in text


# --- F11: repeated --storage-option flags ---------------------------------------------------------------------------
def _copy_cfg(*flags):
    return build_parser(["copy"]).parse_args(["copy", "a", "b", *flags]).cfg


def test_repeated_storage_option_flags_all_count():
    cfg = _copy_cfg("--storage-option=key=AK", "--storage-option", f"secret={SECRET}", "requester_pays=true",
                    "--dst-storage-option=requester_pays=false", "--dst-storage-option=use_listings_cache=false")
    assert cfg.storage.storage_option == ["key=AK", f"secret={SECRET}", "requester_pays=true"]
    assert cfg.dst_storage_option == ["requester_pays=false", "use_listings_cache=false"]
    assert cfg.storage.to_fsspec()["key"] == "AK" and cfg.storage.to_fsspec()["secret"] == SECRET
    assert cfg.dst_options().to_fsspec()["use_listings_cache"] is False
    assert cfg.dst_options().to_fsspec()["requester_pays"] is False
    extract = build_parser(["extract"]).parse_args(
        ["extract", "--model", "m", "--out", "o", "--storage-option=token=T", "--storage-option=requester_pays=true"])
    assert extract.cfg.storage.storage_option == ["token=T", "requester_pays=true"]


@pytest.mark.parametrize(("flags", "named"), [
    (["--storage-option", f"secret={SECRET}", "--storage-option", f"secret={SECRET}x"], "--storage-option secret="),
    ([f"--dst-storage-option=token={SECRET}", f"--dst-storage-option=token={SECRET}x"], "--dst-storage-option token="),
    (["--storage-option", f"secret={SECRET}", f"secret={SECRET}x"], "--storage-option secret="),
])
def test_a_key_given_twice_is_refused_naming_the_key_only(flags, named, capsys):
    with pytest.raises(ConfigError, match=named) as info:
        _copy_cfg(*flags)
    assert SECRET not in str(info.value) and "given twice" in str(info.value)
    assert main(["copy", "a", "b", *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and SECRET not in err


@pytest.mark.parametrize("listed", ["requester_pays=true", ["requester_pays=true"]])
def test_flags_add_to_a_job_files_storage_options(listed, tmp_path):
    import yaml

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"storage_option": listed}))
    cfg = _copy_cfg("--config", str(job), "--storage-option", "use_listings_cache=false", "--storage-option=a=1")
    assert cfg.storage.storage_option == ["requester_pays=true", "use_listings_cache=false", "a=1"]
    assert _copy_cfg("--config", str(job)).storage.storage_option == ["requester_pays=true"]
    with pytest.raises(ConfigError, match="requester_pays=... is given twice"):
        _copy_cfg("--config", str(job), "--storage-option=requester_pays=false")


def test_storage_options_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="given twice"):
        StorageOptions(storage_option=["region=a", "region=b"])


# --- F22: argument errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["probe", f"s3://AKIAUN:{SECRET}/1+2=3@bkt/c2", "--data", "x"],              # a URI given as a positional
    ["copy", "a", "b", f"--storage-optoin=secret={SECRET}"],                      # a mistyped flag
    ["copy", "a", "b", f"--storage-option=secret:{SECRET}"],                      # KEY:VALUE for KEY=VALUE
    ["copy", "a", "b", "--storage-option", f"aws_secret_access_key:{SECRET}"],
    ["copy", "a", "b", f"--hf-tokn={SECRET}"],                                   # a mistyped secret flag
    ["copy", "a", "b", "--no-such-flag", f"https://h/c?token={SECRET}"],
])
def test_argument_errors_show_no_secret(argv, capsys):
    try:
        code = main(argv)  # our own errors: exit code 2
    except SystemExit as exc:  # argparse's
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "error" in err and SECRET not in err, err


def test_error_messages_keep_placeholders():
    text = "--storage-option 'x': write KEY=VALUE, e.g. key=... secret=..."
    assert redact_message(text) == text


# --- F2: the S3 endpoint under another spelling --------------------------------------------------------------------
@pytest.mark.parametrize("spelling", [
    "http://localhost:5123", "http://127.0.0.1:5123/", "HTTP://LOCALHOST:5123", "http://[::1]:5123",
    "http://127.0.0.1:5123//", "http://localhost.:5123",
])
def test_one_s3_endpoint_in_any_spelling_is_one_store(spelling, monkeypatch):
    from shards.locations import overlap

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5123")
    assert overlap(Storage("s3://bkt/c2", {"endpoint_url": spelling}), Storage("s3://bkt/c2")) == "same"
    assert overlap(Storage("s3://bkt/c2/x", {"endpoint_url": spelling}), Storage("s3://bkt/c2")) == "inside"
    assert overlap(Storage("s3://bkt/c2", {"endpoint_url": "http://localhost:5124"}), Storage("s3://bkt/c2")) is None


def test_default_ports_and_aws_endpoints_are_one_store(monkeypatch):
    from shards.locations import normalise_endpoint

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert normalise_endpoint("http://minio.invalid") == normalise_endpoint("HTTP://Minio.invalid:80/")
    assert normalise_endpoint("https://minio.invalid") == normalise_endpoint("https://minio.invalid:443")
    assert normalise_endpoint("https://minio.invalid") != normalise_endpoint("http://minio.invalid")
    for aws in ("https://s3.amazonaws.com", "https://s3.eu-west-1.amazonaws.com/", "aws"):
        assert normalise_endpoint(aws) == "aws"
    assert normalise_endpoint("http://user:pw@localhost:9000") == normalise_endpoint("http://127.0.0.1:9000")

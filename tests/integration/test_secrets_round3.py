"""Secrets, round three (issue 41, findings 3, 4 and 5), with real parts: nginx over HTTPS redirecting to a second
listener that records the ``Authorization`` header it receives; real ``extract`` (a local Ray), ``copy`` and
``stats`` runs against moto's S3 server with secrets in every spelling of every flag and in a YAML job file,
afterwards every object and file they wrote, and everything they printed and logged, searched for the secret;
``s3://KEY:SECRET@…`` URIs whose secret holds ``/`` or ``@``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest

import shards
from cluster.cli import main
from shards.errors import StorageError
from tests.helpers import write_dataset
from tests.webserver import _wait_for, free_port, install_nginx

pytestmark = pytest.mark.integration

USER, PASSWORD = "reader", "Redirect-Passw0rd"


def _cert(folder: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 and localhost (the redirect goes to the other name); key beside it."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True, timeout=60)
    return cert


@contextmanager
def redirecting_nginx(root: Path, work: Path):
    """nginx with two listeners: HTTPS on ``port`` (basic auth; ``/same/X`` redirects to ``/ds/X`` on itself,
    ``/to-http/X`` to the plain-HTTP listener, ``/to-localhost/X`` to itself under the name ``localhost``) and plain
    HTTP on ``other`` (no login), both logging ``host|Authorization|uri|status`` per request. Yields (https base URL,
    other port, the HTTPS listener's log, the HTTP listener's log)."""
    nginx = install_nginx()
    work.mkdir(parents=True, exist_ok=True)
    cert = _cert(work)
    port, other = free_port(), free_port()
    hashed = subprocess.run(["openssl", "passwd", "-apr1", PASSWORD], check=True, capture_output=True,
                            text=True).stdout.strip()
    (work / "htpasswd").write_text(f"{USER}:{hashed}\n")
    temp = " ".join(f"{k}_temp_path {work}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (work / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 256; }}
http {{
  log_format auth '$host|$http_authorization|$request_uri|$status';
  {temp} types {{ application/json json; }} default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {work}/key.pem;
    access_log {work}/https.log auth; root {root};
    auth_basic "actlake"; auth_basic_user_file {work}/htpasswd;
    location ~ ^/same/(.*)$ {{ return 302 https://127.0.0.1:{port}/ds/$1; }}
    location ~ ^/to-http/(.*)$ {{ return 302 http://127.0.0.1:{other}/ds/$1; }}
    location ~ ^/to-localhost/(.*)$ {{ return 302 https://localhost:{port}/ds/$1; }}
  }}
  server {{
    listen 127.0.0.1:{other}; access_log {work}/http.log auth; root {root};
  }}
}}
""")
    log = work / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")],
                                stdout=err, stderr=err, start_new_session=True)
    try:
        _wait_for(port, proc, log)
        _wait_for(other, proc, log)
        yield f"https://127.0.0.1:{port}", other, work / "https.log", work / "http.log", cert
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _requests(log: Path) -> list[list[str]]:
    """The logged requests: [host, Authorization ('-' when none), uri, status]."""
    return [line.split("|") for line in log.read_text().splitlines()] if log.exists() else []


def test_a_login_goes_only_to_the_origin_it_was_given_for(tmp_path, monkeypatch):
    root = tmp_path / "www"
    write_dataset(str(root / "ds"), units=2, rows=20)
    with redirecting_nginx(root, tmp_path / "nginx") as (url, other, https_log, http_log, cert):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        login = f"https://{USER}:{PASSWORD}@{url.split('://')[1]}"
        local = shards.open_dataset(str(root / "ds"))
        # a redirect within the origin keeps the login: the dataset reads whole
        same = shards.open_dataset(f"{login}/same")
        assert same.to_numpy("mlp.0").tobytes() == local.to_numpy("mlp.0").tobytes()
        # another origin (plain HTTP, another port) never gets it, though the reads go there
        moved = shards.open_dataset(f"{login}/to-http")
        assert moved.to_numpy("mlp.0").tobytes() == local.to_numpy("mlp.0").tobytes()
        served = _requests(http_log)
        assert served and all(r[1] == "-" for r in served), served
        # nor another host name of the same server: it asks for a login, which is not sent to it
        with pytest.raises(StorageError, match="wants a login"):
            shards.open_dataset(f"{login}/to-localhost")
        to_localhost = [r for r in _requests(https_log) if r[0] == "localhost"]
        assert to_localhost and all(r[1] == "-" and r[3] == "401" for r in to_localhost), to_localhost
        # the origin itself got the login on every request (no request there went without it and was refused)
        origin = [r for r in _requests(https_log) if r[0] == "127.0.0.1"]
        assert origin and all(r[1].startswith("Basic ") and r[3] != "401" for r in origin), origin


# --- finding 4: secret-named storage options in every spelling ------------------------------------------------
SECRETS = {"oneword": "Sek-OneWord-1111", "space": "Sek-Space-2222", "token": "Sek-Token-3333",
           "json": "Sek-Json-4444", "dst": "Sek-DstPassword-5555", "bearer": "Sek-Bearer-6666",
           "yaml": "Sek-Yaml-7777"}


def _objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_secret_storage_options_reach_no_file_and_no_output(ray_local, s3_bucket, s3_endpoint, tmp_path, capsys,
                                                            caplog):
    caplog.set_level(logging.DEBUG, logger="actlake")
    acts = f"{s3_bucket}/acts"
    # extract to S3: key and secret as one word (--flag=key=value) and as two (--flag key=value), a session token
    assert main(["extract", "--model", "tests.model_factories:tiny_gpt2", "--data", "builtin:concepts?n=10",
                 "--hooks", "resid.1", "--pool", "mean", "--unit-size", "5", "--workers", "1", "--out", acts,
                 "--storage-option=key=AKIAFAKEKEY", f"--storage-option=secret={SECRETS['oneword']}",
                 "--storage-option", f"token={SECRETS['token']}"]) == 0
    assert main(["extract", "--model", "tests.model_factories:tiny_gpt2", "--data", "builtin:concepts?n=10",
                 "--hooks", "resid.1", "--pool", "mean", "--unit-size", "5", "--workers", "1", "--out", acts,
                 "--storage-option", "key=AKIAFAKEKEY", f"secret={SECRETS['space']}"]) == 0  # resumes: same job
    # copy from S3 with the credentials as a JSON value, to a local folder whose options hold a password and
    # an Authorization header (a local disk takes and ignores them)
    client = json.dumps({"aws_access_key_id": "AKIAFAKEKEY", "aws_secret_access_key": SECRETS["json"]})
    headers = json.dumps({"Authorization": f"Bearer {SECRETS['bearer']}"})
    assert main(["copy", acts, str(tmp_path / "copy"), f"--storage-option=client_kwargs={client}",
                 f"--dst-storage-option=password={SECRETS['dst']}", "--dst-storage-option",
                 f"headers={headers}"]) == 0
    # an analysis from a YAML job file holding the credentials as a JSON value, its results on S3
    job = tmp_path / "stats.yaml"
    job.write_text(f"data: {acts}\nhooks: resid.1\nstats: norms\nout: {s3_bucket}/stats\nstorage_option:\n"
                   f"  - 'client_kwargs={{\"aws_access_key_id\": \"AKIAFAKEKEY\", \"aws_secret_access_key\": "
                   f"\"{SECRETS['yaml']}\"}}'\n")
    assert main(["stats", "--config", str(job)]) == 0
    printed = capsys.readouterr()
    written = {f"s3:{k}": v for k, v in _objects(s3_endpoint, s3_bucket.removeprefix("s3://")).items()}
    written.update({str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != job})
    names = set(written)
    for must in ("acts/manifest.json", "acts/README.md", "acts/_log/v000000001.json", "stats/run.json"):
        assert any(n.endswith(must) for n in names), must
    assert any("_checkpoints" in n for n in names) and any(n.endswith("copy/README.md") for n in names)
    for label, secret in SECRETS.items():
        leaks = [n for n, blob in written.items() if secret.encode() in blob]
        assert not leaks, f"{label} secret in {leaks}"
        assert secret not in printed.out + printed.err + caplog.text, label
    assert "could not write the dataset card" not in caplog.text
    card = next(v for k, v in written.items() if k.endswith("copy/README.md")).decode()
    assert "--dst-storage-option=password=***" in card and '"Authorization": "***"' in card  # recorded, masked


# --- finding 5: a secret holding '/' or '@' in an s3:// URI -----------------------------------------------------
def test_a_secret_holding_a_slash_or_an_at_sign_is_taken_out_of_the_uri(s3_bucket, s3_endpoint, tmp_path, capsys):
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"  # AWS secret keys are base64: '/' and '+' are common
    write_dataset(f"{s3_bucket}/ds", units=2, rows=20)
    bucket = s3_bucket.removeprefix("s3://")
    with_creds = f"s3://AKIAFAKEKEY:{secret}@{bucket}"
    assert main(["info", f"{with_creds}/ds"]) == 0
    assert main(["info", f"{with_creds}/missing"]) == 2  # an error names the URI, without the secret
    assert main(["copy", f"{with_creds}/ds", str(tmp_path / "copy")]) == 0
    assert main(["probe", "--data", f"{with_creds}/ds", "--hooks", "mlp.0", "--label", "label", "--out",
                 str(tmp_path / "probe")]) == 0
    at_secret = "Sek@With-At-8888"  # an unencoded '@' in the secret: the bucket follows the last one
    assert main(["copy", f"{s3_bucket}/ds", f"s3://AKIAFAKEKEY:{at_secret}@{bucket}/dst"]) == 0
    printed = capsys.readouterr()
    assert "s3://AKIAFAKEKEY" not in printed.out + printed.err
    fragments = [secret, secret.split("/")[1], "With-At-8888", "K7MDENG"]
    assert not any(f in printed.out + printed.err for f in fragments), printed
    assert f"{s3_bucket}/missing" in printed.err  # the error still names what was missing
    written = {**_objects(s3_endpoint, bucket), **{str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}}
    assert any(k.endswith("dst/README.md") for k in written)
    for name, blob in written.items():
        assert not any(f.encode() in blob for f in fragments), name
    # a URI whose credentials cannot be told from its path is refused before anything runs, showing neither
    assert main(["info", f"s3://AKIAFAKEKEY:{secret}@{bucket}/x@y/ds"]) == 2
    err = capsys.readouterr().err
    assert "Percent-encode" in err and not any(f in err for f in fragments)

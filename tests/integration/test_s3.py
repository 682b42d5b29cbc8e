"""The format on a real S3 server (moto's server on loopback, reached through s3fs)."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import torch

import shards
from cluster.cli import main
from tests.helpers import HOOKS, raw_bytes, unit_columns, write_dataset

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("reader", ["pyarrow", "s3fs"])
def test_roundtrip_exact_on_s3(s3_bucket, monkeypatch, reader):
    """Unit files read through pyarrow's native S3 filesystem (the default) or s3fs give the same bytes."""
    monkeypatch.setenv("ACTLAKE_S3_READER", reader)
    uri = f"{s3_bucket}/acts/run-{reader}"
    ds = write_dataset(uri, units=3, rows=30, compression="zstd")
    assert ds.num_rows == 90
    exp = [unit_columns(u, 30) for u in range(3)]
    got = ds.take(np.arange(90), dtype=None)
    for name in HOOKS:
        assert raw_bytes(got[name]) == raw_bytes(torch.cat([e[name] for e in exp]))
    assert got["label"] == [x for e in exp for x in e["label"]]
    ids = [i for b in ds.iter_batches(batch_size=16, shuffle=True, seed=2) for i in b["example_id"].tolist()]
    assert sorted(ids) == list(range(90))
    assert shards.verify_dataset(uri).ok
    assert (type(shards.open_dataset(uri).storage.arrow_fs).__name__ == "S3FileSystem") == (reader == "pyarrow")


def test_explicit_storage_options_and_cli(s3_bucket, s3_endpoint, capsys, monkeypatch):
    uri = f"{s3_bucket}/x"
    write_dataset(uri, units=2, rows=5)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint now only comes from storage_options / the flag
    ds = shards.open_dataset(uri, {"endpoint_url": s3_endpoint})
    assert ds.num_rows == 10
    assert main(["info", uri, "--endpoint-url", s3_endpoint]) == 0
    assert main(["ls", s3_bucket, "--endpoint-url", s3_endpoint]) == 0
    out = capsys.readouterr().out
    assert "rows      10" in out and f"{uri}" in out


def test_flipped_byte_on_s3(s3_bucket):
    import s3fs

    uri = f"{s3_bucket}/flip"
    write_dataset(uri, units=3, rows=20)
    fs = s3fs.S3FileSystem()
    rel = next(u.path for u in shards.open_dataset(uri).units if u.id == 1)  # format v2: unit id + attempt
    path = f"{uri[5:]}/{rel}"
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 1
    fs.pipe_file(path, bytes(data))
    report = shards.verify_dataset(uri)
    assert list(report.bad) == [rel]
    with pytest.raises(shards.CorruptDataError, match=rel):  # the reader (pyarrow's S3 client) sees it too
        list(shards.open_dataset(uri).iter_batches(batch_size=8))


def test_second_writer_refused_on_s3(s3_bucket):
    uri = f"{s3_bucket}/lock"
    w = shards.create_dataset(uri, HOOKS)
    with pytest.raises(shards.DatasetLockedError):
        shards.create_dataset(uri, HOOKS, mode="append")
    w.close()


def test_secrets_not_in_manifest_logs_or_errors(s3_bucket, s3_endpoint, caplog):
    import s3fs

    # our loggers at DEBUG, everything at INFO (botocore's own DEBUG output signs requests with the
    # token, which is why `actlake -v` raises only actlake's loggers to DEBUG)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="actlake")
    opts = {"key": "testing", "secret": "testing", "endpoint_url": s3_endpoint,
            "client_kwargs": {"aws_session_token": "tok-SECRET-123"}}
    uri = f"{s3_bucket}/sec"
    write_dataset(uri, units=1, rows=3, storage_options=opts,
                  config={"storage_options": opts, "out": uri})
    manifest = s3fs.S3FileSystem().cat_file(f"{uri[5:]}/manifest.json").decode()
    assert "tok-SECRET-123" not in manifest and '"secret": "testing"' not in manifest
    with pytest.raises(shards.DatasetNotFoundError) as err:
        shards.open_dataset(f"s3://testing:tok-SECRET-123@{s3_bucket[5:]}/nothing", opts)
    assert "tok-SECRET-123" not in str(err.value)
    assert "tok-SECRET-123" not in caplog.text


def test_missing_bucket_is_a_clear_error(s3_endpoint):
    with pytest.raises((shards.StorageError, shards.DatasetNotFoundError)) as err:
        shards.create_dataset("s3://no-such-bucket-xyz/acts", HOOKS)
    assert "no-such-bucket-xyz" in str(err.value)


def test_transient_outage_is_retried(s3_bucket, s3_endpoint, caplog):
    """A real outage: the S3 port stops answering for ~1.5 s, then a server comes back on it."""
    import boto3
    from moto.server import ThreadedMotoServer

    # a second, private server whose outage does not disturb other tests
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    port = srv._server.server_port
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="flaky")
    opts = {"endpoint_url": endpoint, "config_kwargs": {"retries": {"max_attempts": 1}}}
    uri = "s3://flaky/acts"
    write_dataset(uri, units=2, rows=10, storage_options=opts)
    srv.stop()  # moto keeps state per process: the restarted server still has the bucket

    def restart():
        time.sleep(1.5)
        restarted.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
        restarted[0].start()

    restarted: list = []
    t = threading.Thread(target=restart)
    t.start()
    try:
        ds = shards.open_dataset(uri, opts)  # fails while the port is closed, succeeds after the restart
        assert ds.num_rows == 20
        assert "transient error on read" in caplog.text  # it did fail first, and was retried
    finally:
        t.join()
        if restarted:
            restarted[0].stop()

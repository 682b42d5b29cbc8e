"""An S3 endpoint where nothing listens (attack on issue 41's fixes, F21): every command that reads a dataset
(info, ls, versions, verify, card) retried for about seven minutes before it failed. The first operation on an
endpoint not reached yet now probes it quickly and fails in seconds, naming the endpoint; an endpoint that
answered keeps the patient retries."""

from __future__ import annotations

import time

import pytest

import shards.storage as storage_module
from cluster.cli import main
from shards.errors import StorageError
from shards.storage import Storage
from tests.webserver import free_port


@pytest.fixture
def dead_endpoint(monkeypatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: each connection is refused at once


def test_an_unreachable_endpoint_fails_in_seconds_naming_it(dead_endpoint):
    t = time.monotonic()
    with pytest.raises(StorageError) as err:
        Storage("s3://bkt/acts", {"endpoint_url": dead_endpoint}).get_bytes("manifest.json")
    assert time.monotonic() - t < 30
    text = str(err.value)
    assert f"cannot reach the S3 endpoint {dead_endpoint} for s3://bkt/acts/manifest.json" in text
    assert "--endpoint-url" in text and dead_endpoint not in storage_module._REACHED


@pytest.mark.parametrize("argv", [["info"], ["ls"], ["versions"], ["verify"], ["card", "--print"]])
def test_read_commands_against_an_unreachable_endpoint_are_a_quick_message(dead_endpoint, capsys, argv):
    t = time.monotonic()
    assert main([argv[0], "s3://bkt/acts", *argv[1:], "--endpoint-url", dead_endpoint]) == 2
    assert time.monotonic() - t < 30
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"cannot reach the S3 endpoint {dead_endpoint}" in err


def test_an_endpoint_that_answers_is_probed_once(s3_bucket, s3_endpoint, monkeypatch):
    storage_module._REACHED.discard(s3_endpoint)
    st = Storage(f"{s3_bucket}/x", {"endpoint_url": s3_endpoint})
    st.put_bytes("a.txt", b"a")
    assert s3_endpoint in storage_module._REACHED
    probes = []
    monkeypatch.setattr(storage_module, "quick_s3_options", lambda o: probes.append(o) or o)
    assert Storage(f"{s3_bucket}/x", {"endpoint_url": s3_endpoint}).get_bytes("a.txt") == b"a"
    assert probes == []  # reached before: no second probe
    storage_module._REACHED.discard(s3_endpoint)
    assert not Storage(f"{s3_bucket}/nothing", {"endpoint_url": s3_endpoint}).exists("manifest.json")
    assert len(probes) == 1  # a store that answers, even "not found", is reached
